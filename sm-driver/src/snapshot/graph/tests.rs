//! The node graph from tags, its refusals, and the collector's plan.

use super::*;

const VOL: &str = "nvmetcp_vol";

fn lv(name: &str, tags: &[&str]) -> Lv {
    Lv {
        name: name.into(),
        vg: "vg".into(),
        size: 1 << 30,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        active: false,
    }
}

fn node(name: &str, format: ImageFormat, parent: Option<&str>, depth: u32, volume_of: Option<&str>) -> Lv {
    let n = Node { lv: name.into(), format, parent: parent.map(str::to_owned), depth };
    let mut tags = node_tags(&n);
    if let Some(v) = volume_of {
        tags.push(VOL.into());
        tags.push(volume_node_tag(v));
    }
    Lv { name: name.into(), vg: "vg".into(), size: 1 << 30, tags, active: false }
}

#[test]
fn a_volume_from_before_snapshots_is_its_own_raw_base() {
    let graph = Graph::from_lvs(&[lv("vol-a", &[VOL, "u=a"])], VOL).unwrap();
    let chain = graph.chain("vol-a").unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].format, ImageFormat::Raw);
    assert_eq!(graph.depth_after_snapshot("vol-a").unwrap(), 2);
    assert_eq!(graph.collect_plan(), [], "a referenced raw volume is never collected");
}

#[test]
fn tags_round_trip_and_chains_read_leaf_first() {
    // vol-a's first snapshot: its raw LV became the base, node-1 its leaf;
    // the snapshot volume vol-s refers to the base.
    let lvs = [
        lv("vol-a", &[VOL, NODE_TAG, "nf=raw", "nd=1", "nn=node-1"]),
        node("node-1", ImageFormat::Qcow2, Some("vol-a"), 2, None),
        lv("vol-s", &[VOL, "nn=vol-a"]),
    ];
    let graph = Graph::from_lvs(&lvs, VOL).unwrap();
    let chain: Vec<&str> = graph.chain("vol-a").unwrap().iter().map(|n| n.lv.as_str()).collect();
    assert_eq!(chain, ["node-1", "vol-a"]);
    assert_eq!(graph.node_of("vol-s").unwrap().lv, "vol-a");
    assert_eq!(node_tags(graph.node("node-1").unwrap()), ["nvmetcp_node", "nf=qcow2", "nd=2", "np=vol-a"]);
}

#[test]
fn inconsistent_metadata_is_an_error_never_a_partial_graph() {
    let dangling = [node("node-1", ImageFormat::Qcow2, Some("gone"), 2, None)];
    assert!(matches!(Graph::from_lvs(&dangling, VOL), Err(GraphError::Dangling { .. })));
    let missing_node = [lv("vol-a", &[VOL, "nn=node-9"])];
    assert!(matches!(Graph::from_lvs(&missing_node, VOL), Err(GraphError::Dangling { .. })));
    let stale_depth = [node("b", ImageFormat::Raw, None, 1, None), node("l", ImageFormat::Qcow2, Some("b"), 5, None)];
    assert_eq!(Graph::from_lvs(&stale_depth, VOL).unwrap().node("l").unwrap().depth, 2, "parent links win");
    let looped = [node("x", ImageFormat::Qcow2, Some("y"), 2, None), node("y", ImageFormat::Qcow2, Some("x"), 2, None)];
    assert!(matches!(Graph::from_lvs(&looped, VOL), Err(GraphError::Depth { actual: 0, .. })));
    let bad = [lv("n", &[NODE_TAG, "nf=vhd", "nd=1"])];
    let error = Graph::from_lvs(&bad, VOL).unwrap_err();
    assert!(error.to_string().contains("nf=vhd"), "{error}");
    let raw_with_parent = [node("b", ImageFormat::Raw, None, 1, None), lv("r", &[NODE_TAG, "nf=raw", "nd=2", "np=b"])];
    assert!(Graph::from_lvs(&raw_with_parent, VOL).is_err());
}

#[test]
fn chains_are_capped_at_thirty_with_an_error_that_says_what_to_do() {
    let mut lvs = vec![node("n1", ImageFormat::Raw, None, 1, None)];
    for i in 2..=MAX_CHAIN {
        lvs.push(node(&format!("n{i}"), ImageFormat::Qcow2, Some(&format!("n{}", i - 1)), i, None));
    }
    lvs.push(lv("vol-a", &[VOL, &format!("nn=n{MAX_CHAIN}")]));
    let graph = Graph::from_lvs(&lvs, VOL).unwrap();
    let error = graph.depth_after_snapshot("vol-a").unwrap_err();
    assert_eq!(error, GraphError::ChainTooLong { volume: "vol-a".into(), depth: 30 });
    assert!(error.to_string().contains("delete old snapshots"), "{error}");

    lvs.pop();
    lvs.push(lv("vol-a", &[VOL, "nn=n29"]));
    assert_eq!(Graph::from_lvs(&lvs, VOL).unwrap().depth_after_snapshot("vol-a").unwrap(), 30);
}

#[test]
fn the_collector_removes_unreferenced_leaves_and_merges_single_children() {
    // base ← s1 ← s2 ← leaf (vol-a); snapshots of s1 and s2 were deleted;
    // a deleted clone left an unreferenced leaf c1 on s2, so s2 has two
    // children and waits until c1 is gone.
    let lvs = [
        node("base", ImageFormat::Raw, None, 1, None),
        node("s1", ImageFormat::Qcow2, Some("base"), 2, None),
        node("s2", ImageFormat::Qcow2, Some("s1"), 3, None),
        node("leaf", ImageFormat::Qcow2, Some("s2"), 4, None),
        node("c1", ImageFormat::Qcow2, Some("s2"), 4, None),
        lv("vol-a", &[VOL, "nn=leaf"]),
    ];
    let plan = Graph::from_lvs(&lvs, VOL).unwrap().collect_plan();
    assert_eq!(
        plan,
        [
            Collect::Remove { lv: "c1".into() },
            Collect::Merge {
                child: "s1".into(),
                into: "base".into(),
                grandchildren: vec!["s2".into()],
                volumes: vec![]
            },
        ],
        "s2 into s1 waits for the next plan: s1 is busy"
    );
}

#[test]
fn merging_into_a_node_moves_the_volume_that_referred_to_the_child() {
    let lvs = [
        node("base", ImageFormat::Raw, None, 1, None),
        node("leaf", ImageFormat::Qcow2, Some("base"), 2, None),
        lv("vol-a", &[VOL, "nn=leaf"]),
    ];
    let plan = Graph::from_lvs(&lvs, VOL).unwrap().collect_plan();
    assert_eq!(
        plan,
        [Collect::Merge {
            child: "leaf".into(),
            into: "base".into(),
            grandchildren: vec![],
            volumes: vec!["vol-a".into()]
        }]
    );
}

#[test]
fn a_base_shared_by_two_clones_stays() {
    let lvs = [
        node("base", ImageFormat::Raw, None, 1, None),
        node("c1", ImageFormat::Qcow2, Some("base"), 2, None),
        node("c2", ImageFormat::Qcow2, Some("base"), 2, None),
        lv("vol-1", &[VOL, "nn=c1"]),
        lv("vol-2", &[VOL, "nn=c2"]),
    ];
    assert_eq!(Graph::from_lvs(&lvs, VOL).unwrap().collect_plan(), []);
}

/// Applies a plan to the LVs as the collector would (tags only).
fn apply(lvs: &mut Vec<Lv>, plan: &[Collect]) {
    for step in plan {
        match step {
            Collect::Remove { lv } => lvs.retain(|l| &l.name != lv),
            Collect::Merge { child, into, grandchildren, volumes } => {
                for lv in lvs.iter_mut() {
                    if grandchildren.iter().any(|g| *g == lv.name) {
                        lv.tags.retain(|t| !t.starts_with("np="));
                        lv.tags.push(format!("np={into}"));
                    }
                    if volumes.iter().any(|v| *v == lv.name) {
                        lv.tags.retain(|t| !t.starts_with("nn="));
                        lv.tags.push(volume_node_tag(into));
                    }
                }
                lvs.retain(|l| &l.name != child);
            }
        }
    }
}

#[test]
fn ten_deleted_snapshots_collect_back_to_one_node() {
    // vol-a snapshotted ten times (s1..s10 frozen, leaf on top), then every
    // snapshot volume deleted: only vol-a refers to anything.
    let mut lvs = vec![node("base", ImageFormat::Raw, None, 1, None)];
    let mut parent = "base".to_owned();
    for i in 1..=10 {
        lvs.push(node(&format!("s{i}"), ImageFormat::Qcow2, Some(&parent), i + 1, None));
        parent = format!("s{i}");
    }
    lvs.push(node("leaf", ImageFormat::Qcow2, Some(&parent), 12, None));
    lvs.push(lv("vol-a", &[VOL, "nn=leaf"]));
    let mut rounds = 0;
    loop {
        let plan = Graph::from_lvs(&lvs, VOL).unwrap().collect_plan();
        if plan.is_empty() {
            break;
        }
        apply(&mut lvs, &plan);
        rounds += 1;
        assert!(rounds <= 20, "the collector does not converge");
    }
    let graph = Graph::from_lvs(&lvs, VOL).unwrap();
    let chain = graph.chain("vol-a").unwrap();
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert_eq!(chain[0].lv, "base");
    assert_eq!(lvs.len(), 2, "only the base and vol-a's metadata remain");
}

#[test]
fn a_virtual_size_is_a_nodes_own_then_its_parents_then_the_raw_bases() {
    let mut base = node("vol-a", ImageFormat::Raw, None, 1, None);
    base.size = 64 << 20;
    let old = node("node-1", ImageFormat::Qcow2, Some("vol-a"), 2, None);
    let mut grown = node("node-2", ImageFormat::Qcow2, Some("node-1"), 3, None);
    grown.tags.push(virtual_size_tag(128 << 20));
    let above = node("node-3", ImageFormat::Qcow2, Some("node-2"), 4, Some("node-3"));
    let lvs = [base.clone(), old, grown, above];
    let graph = Graph::from_lvs(&lvs, VOL).unwrap();
    assert_eq!(virtual_size(&graph, &lvs, "vol-a"), 64 << 20);
    assert_eq!(virtual_size(&graph, &lvs, "node-1"), 64 << 20, "the raw base's LV size");
    assert_eq!(virtual_size(&graph, &lvs, "node-2"), 128 << 20, "its own");
    assert_eq!(virtual_size(&graph, &lvs, "node-3"), 128 << 20, "its parent's");
    // A raw node's size is its LV's: an nv= on one, or one that does not
    // parse, is damage.
    for bad in ["nv=4096", "nv=x"] {
        let mut raw = base.clone();
        raw.tags.push(bad.to_owned());
        assert!(matches!(Graph::from_lvs(&[raw], VOL), Err(GraphError::BadTag { .. })), "{bad}");
    }
    let mut unreadable = lvs.to_vec();
    unreadable[2].tags.push("nv=12x".to_owned());
    unreadable[2].tags.retain(|t| *t != virtual_size_tag(128 << 20));
    assert!(matches!(Graph::from_lvs(&unreadable, VOL), Err(GraphError::BadTag { .. })));
}
