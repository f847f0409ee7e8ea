//! Test fakes (the recording runner, scripted fabrics and discovery, the
//! sysfs tree, the XAPI fixture) stay out of the dom0 binary's public
//! surface: every module that holds one, and every re-export of one, is
//! compiled only for tests or with the `testing` feature.
//!
//! Read from the source, as `module_graph.rs` reads the imports.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

mod source;

use std::path::Path;

use source::rust_files;

const GATES: [&str; 2] = ["#[cfg(test)]", "#[cfg(any(test, feature = \"testing\"))]"];

/// Whether a module of this name holds test fakes.
fn is_fake_module(name: &str) -> bool {
    ["fake", "fixture", "testing"].iter().any(|word| name.contains(word))
}

/// `mod NAME;` (any visibility) → NAME.
fn declared_module(line: &str) -> Option<&str> {
    let rest =
        line.trim().strip_prefix("pub(crate) ").or_else(|| line.trim().strip_prefix("pub ")).unwrap_or(line.trim());
    rest.strip_prefix("mod ")?.strip_suffix(';')
}

/// Every ungated place that exposes a fake: (file, line number, line).
fn ungated(src: &Path) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut checked = 0;
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let exposes = declared_module(line).is_some_and(is_fake_module)
                || (line.trim_start().starts_with("pub use") && line.contains("Fake"));
            if !exposes {
                continue;
            }
            checked += 1;
            let gate = lines[..at].iter().rev().map(|l| l.trim()).find(|l| !l.is_empty() && !l.starts_with("//"));
            if !gate.is_some_and(|g| GATES.contains(&g)) {
                found.push(format!("{}:{}: {}", file.display(), at + 1, line.trim()));
            }
        }
    }
    (checked, found)
}

#[test]
fn every_test_fake_is_compiled_only_for_tests_or_the_testing_feature() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (checked, found) = ungated(&src);
    // The runner, fabrics, discovery, sysfs and XAPI fakes at least: a rule
    // that finds nothing would prove nothing.
    assert!(checked >= 5, "only {checked} fake modules or re-exports found: has the naming changed?");
    assert!(found.is_empty(), "test fakes in the dom0 binary's public surface:\n{}", found.join("\n"));
}

#[test]
fn an_ungated_fake_is_found() {
    let dir = std::env::temp_dir().join(format!("nvmetcp-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "#[cfg(test)]\nmod fake;\n\npub mod fixture;\n#[cfg(any(test, feature = \"testing\"))]\npub use self::fake::FakeRunner;\npub use self::x::FakeNetwork;\n",
    )
    .unwrap();
    let (checked, found) = ungated(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(checked, 4);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].ends_with(":4: pub mod fixture;") && found[1].ends_with(":7: pub use self::x::FakeNetwork;"),
        "{found:?}"
    );
}
