use super::*;

fn lv(name: &str, tags: &[&str]) -> Lv {
    Lv {
        name: name.into(),
        vg: "vg".into(),
        size: 4 << 20,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        active: false,
    }
}

#[test]
fn layered_means_a_node_or_a_reference_to_one() {
    assert!(!is_layered(&lv("vol-a", &["nvmetcp_vol", "u=1"])));
    assert!(is_layered(&lv("vol-a", &["nvmetcp_vol", "nn=node-1"])));
    assert!(is_layered(&lv("vol-a", &["nvmetcp_vol", NODE_TAG, "nf=raw", "nd=1"])));
}

#[test]
fn new_names_are_no_volume_names_except_the_volume() {
    let names = new_names("0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", true, vec![]);
    assert!(crate::volume::uri::is_volume_name(&names.volume));
    assert!(!crate::volume::uri::is_volume_name(&names.leaf));
    assert!(!crate::volume::uri::is_volume_name(names.clone_leaf.as_deref().unwrap()));
    assert!(new_names("u", false, vec![]).clone_leaf.is_none());
}
