//! VDI records: `SR.scan` rebuilds them from the backend's `SR.ls` and
//! `SR.stat` (as xapi's `Xapi_sr.scan` does for a SMAPIv3 SR: one VDI per
//! volume, `location` = the volume's key, the volume's UUID as the VDI's;
//! VDIs whose volume is gone are dropped; sizes from `SR.stat`), and
//! `VDI.create` asks the backend for a volume.

use std::collections::BTreeMap;
use std::sync::Arc;

use xapi_client::Value;

use crate::backend::{Failure, NewVolume, Volume};
use crate::handlers::{arg, exists};
use crate::model::Model;
use crate::server::Shared;

type Reply = Result<Value, Failure>;

fn attached(model: &Model, pbd: &str) -> bool {
    matches!(model.get("PBD", pbd).and_then(|r| r.get("currently_attached")), Some(Value::Bool(true)))
}

/// The host a call on `sr` runs on: the master's PBD if it is plugged, else
/// any plugged one; `SR_HAS_NO_PBDS` when none is (xapi's
/// `Helpers.choose_pbd_for_sr`).
fn host_for(model: &Model, sr: &str) -> Result<String, Failure> {
    let master = model.master();
    let pbds: Vec<String> = model.find("PBD", "SR", sr).into_iter().filter(|p| attached(model, p)).collect();
    pbds.iter()
        .map(|p| model.text("PBD", p, "host"))
        .find(|h| *h == master)
        .or_else(|| pbds.first().map(|p| model.text("PBD", p, "host")))
        .ok_or_else(|| Failure::new("SR_HAS_NO_PBDS", &[sr]))
}

fn vdi_fields(sr: &str, volume: &Volume) -> Vec<(&'static str, Value)> {
    let empty = || Value::Struct(BTreeMap::new());
    vec![
        ("name_label", Value::from(volume.name_label.as_str())),
        ("name_description", Value::from(volume.name_description.as_str())),
        ("SR", Value::from(sr)),
        ("location", Value::from(volume.key.as_str())),
        ("virtual_size", Value::Int(volume.virtual_size)),
        ("physical_utilisation", Value::Int(volume.physical_utilisation)),
        ("type", Value::from("user")),
        ("sharable", Value::Bool(volume.sharable)),
        ("read_only", Value::Bool(volume.read_only)),
        ("managed", Value::Bool(true)),
        ("missing", Value::Bool(false)),
        ("is_a_snapshot", Value::Bool(false)),
        ("snapshot_of", Value::from("OpaqueRef:NULL")),
        ("snapshots", Value::Array(vec![])),
        ("VBDs", Value::Array(vec![])),
        ("sm_config", empty()),
        ("other_config", empty()),
        ("xenstore_data", empty()),
        ("tags", Value::Array(vec![])),
        ("allowed_operations", Value::Array(vec![])),
        ("current_operations", empty()),
    ]
}

fn add_vdi(model: &mut Model, sr: &str, volume: &Volume) -> String {
    let uuid = volume.uuid.clone().unwrap_or_else(|| model.new_uuid());
    let vdi = model.add_with_uuid("VDI", uuid, vdi_fields(sr, volume));
    model.push("SR", sr, "VDIs", &vdi);
    vdi
}

/// `SR.scan(sr)`.
pub fn sr_scan(shared: &Arc<Shared>, sr: &str) -> Reply {
    let (info, sr_uuid) = {
        let model = shared.lock();
        exists(&model, "SR", sr)?;
        (model.host_info(&host_for(&model, sr)?), model.text("SR", sr, "uuid"))
    };
    let Some(scan) = shared.backend.sr_scan(&info, &sr_uuid)? else { return Ok(Value::from("")) };
    let mut model = shared.lock();
    exists(&model, "SR", sr)?;
    let known: BTreeMap<String, String> =
        model.find("VDI", "SR", sr).into_iter().map(|v| (model.text("VDI", &v, "location"), v)).collect();
    for volume in &scan.volumes {
        match known.get(&volume.key) {
            Some(vdi) => {
                for (field, value) in vdi_fields(sr, volume).into_iter().filter(|(f, _)| {
                    matches!(*f, "name_label" | "name_description" | "virtual_size" | "physical_utilisation")
                }) {
                    model.set("VDI", vdi, field, value);
                }
            }
            None => {
                add_vdi(&mut model, sr, volume);
            }
        }
    }
    for (key, vdi) in &known {
        if !scan.volumes.iter().any(|v| &v.key == key) {
            model.pull("SR", sr, "VDIs", vdi);
            model.remove("VDI", vdi);
        }
    }
    let allocated: i64 = scan.volumes.iter().map(|v| v.virtual_size).sum();
    model.set("SR", sr, "physical_size", Value::Int(scan.total_space));
    model.set("SR", sr, "physical_utilisation", Value::Int(scan.total_space - scan.free_space));
    model.set("SR", sr, "virtual_allocation", Value::Int(allocated));
    shared.changed.notify_all();
    Ok(Value::from(""))
}

/// `VDI.create(record)`: the backend's `Volume.create` on the SR's host,
/// then the record.
pub fn vdi_create(shared: &Arc<Shared>, args: &[Value]) -> Reply {
    const METHOD: &str = "VDI.create";
    let record = arg(args, 0, METHOD)?.as_struct(METHOD).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["args"]))?;
    let text = |name: &str| record.get(name).and_then(|v| v.as_str(name).ok()).unwrap_or_default().to_owned();
    let flag = |name: &str| record.get(name).and_then(|v| v.as_bool(name).ok()).unwrap_or(false);
    let sr = text("SR");
    let virtual_size = record
        .get("virtual_size")
        .and_then(|v| v.as_i64("virtual_size").ok())
        .ok_or_else(|| Failure::new("FIELD_TYPE_ERROR", &["virtual_size"]))?;
    let new = NewVolume {
        name_label: text("name_label"),
        name_description: text("name_description"),
        virtual_size,
        sharable: flag("sharable"),
    };
    let (info, sr_uuid) = {
        let model = shared.lock();
        exists(&model, "SR", &sr)?;
        (model.host_info(&host_for(&model, &sr)?), model.text("SR", &sr, "uuid"))
    };
    let made = shared.backend.volume_create(&info, &sr_uuid, &new)?;
    let mut model = shared.lock();
    exists(&model, "SR", &sr)?;
    let volume = made.unwrap_or_else(|| Volume {
        key: model.new_uuid(),
        uuid: None,
        name_label: new.name_label.clone(),
        name_description: new.name_description.clone(),
        virtual_size: new.virtual_size,
        physical_utilisation: new.virtual_size,
        sharable: new.sharable,
        read_only: flag("read_only"),
    });
    let vdi = add_vdi(&mut model, &sr, &volume);
    shared.changed.notify_all();
    Ok(Value::String(vdi))
}
