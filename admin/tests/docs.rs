//! Every command the README and the administrator docs quote is exercised by a
//! test or the demo: each one must match an entry below, and the file named
//! there must really run it. A new command in the docs without a test fails
//! here; so does a test that stops running a documented command.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

use std::path::Path;

/// Administrator documents whose code blocks are commands (blocks marked
/// `text` are output and are skipped).
const DOCUMENTS: &[&str] =
    &["README.md", "docs/install.md", "docs/manual-guide.md", "docs/security.md", "docs/errors.md", "BENCHMARKS.md"];

/// (how the documented command starts, the file that exercises it, what that
/// file must contain to do so).
const EXERCISED: &[(&str, &str, &str)] = &[
    ("tests/demo", "tests/run", "demo) tests/demo ;;"),
    ("tests/run", ".ci/run", "\ntests/run\n"),
    ("bench/run", "tests/run", "\nbench/run --short\n"),
    ("nvmetcp doctor --pool", "tests/testbed/scenarios/admin-story.sh", "nvmetcp doctor --pool --portals"),
    ("nvmetcp probe --portals", "tests/testbed/scenarios/admin-story.sh", "nvmetcp probe --portals"),
    ("nvmetcp sr-create --name", "tests/testbed/scenarios/admin-story.sh", "nvmetcp sr-create --name"),
    ("nvmetcp status", "tests/testbed/scenarios/admin-story.sh", "show nvmetcp status"),
    (
        "echo '{\"dbg\":\"test\"}' | /usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.nvmetcp/Plugin.Query --json",
        "rpm/check",
        "Plugin.Query '{\"dbg\":\"rpm-check\"}'",
    ),
    ("nvmetcp-plugin Plugin.diagnostics", "sm-driver/tests/protocol.rs", "\"Plugin.diagnostics\""),
    ("nvmetcp-plugin --help", "sm-driver/tests/protocol.rs", "\"--help\""),
    // On XCP-ng only: the package's own install into a scratch root, and the
    // post-install step that reports the SM record, stand for these.
    ("yum install ./nvmetcp-", "rpm/check", "--install --nodeps --noscripts"),
    ("xe-toolstack-restart", "sm-driver/src/install.rs", "run xe-toolstack-restart on each host"),
    ("xe sm-list type=nvmetcp", "sm-driver/src/install.rs", "fn registration_is_read_from_xapi"),
    // The Xen Orchestra plugin's install, from its tarball into a scratch prefix.
    ("npm pack ./xo/xo-server-nvmetcp", "xo/xo-server-nvmetcp/test/package.test.mjs", "npm('pack', packageDir)"),
    ("npm install --global ./xo-server-nvmetcp-", "xo/xo-server-nvmetcp/test/package.test.mjs", "npm('install', '--global'"),
];

fn commands(document: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(document)).unwrap();
    let mut commands = Vec::new();
    let mut block: Option<bool> = None; // Some(is_text) inside a block
    for line in text.lines() {
        if let Some(fence) = line.strip_prefix("```") {
            block = match block {
                None => Some(fence.trim() == "text"),
                Some(_) => None,
            };
            continue;
        }
        if block == Some(false) {
            let command = line.split("  #").next().unwrap_or_default().trim();
            if !command.is_empty() && !command.starts_with('#') {
                commands.push(command.to_owned());
            }
        }
    }
    commands
}

#[test]
fn every_documented_command_is_exercised() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut unexercised = Vec::new();
    let mut seen = 0;
    for document in DOCUMENTS {
        for command in commands(document) {
            seen += 1;
            match EXERCISED.iter().find(|(prefix, _, _)| command.starts_with(prefix)) {
                None => unexercised.push(format!("{document}: {command}")),
                Some((_, file, needle)) => {
                    let exercising = std::fs::read_to_string(root.join(file)).unwrap();
                    assert!(
                        exercising.contains(needle),
                        "{document}: `{command}` is said to be exercised by {file}, which does not contain {needle:?}"
                    );
                }
            }
        }
    }
    assert!(
        unexercised.is_empty(),
        "commands quoted in the docs that no test or demo runs:\n{}",
        unexercised.join("\n")
    );
    assert!(seen >= 10, "only {seen} commands found: is the code-block scan broken?");
}

#[test]
fn the_readme_has_exactly_two_set_up_commands() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = readme.split("## See it work").nth(1).unwrap().split("\n## ").next().unwrap();
    assert_eq!(commands_in(section), ["tests/demo", "tests/run"]);
}

fn commands_in(section: &str) -> Vec<String> {
    let mut inside = false;
    let mut found = Vec::new();
    for line in section.lines() {
        if line.starts_with("```") {
            inside = !inside;
        } else if inside {
            found.push(line.trim().to_owned());
        }
    }
    found
}
