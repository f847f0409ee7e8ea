//! The calls the emulator answers and the XAPI rules they apply.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xapi_client::codec::{write_value, Encoding};
use xapi_client::Value;

use crate::backend::Failure;
use crate::model::{MapUpdate, Model, CLASSES};
use crate::server::Shared;

type Reply = Result<Value, Failure>;

pub(crate) fn arg<'a>(params: &'a [Value], index: usize, method: &str) -> Result<&'a Value, Failure> {
    params.get(index).ok_or_else(|| {
        Failure::new("MESSAGE_PARAMETER_COUNT_MISMATCH", &[method, &(index + 1).to_string(), &params.len().to_string()])
    })
}

pub(crate) fn text(params: &[Value], index: usize, method: &str) -> Result<String, Failure> {
    match arg(params, index, method)? {
        Value::String(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(Failure::new("FIELD_TYPE_ERROR", &[&format!("{method} parameter {index}")])),
    }
}

fn string_map(params: &[Value], index: usize, method: &str) -> Result<BTreeMap<String, String>, Failure> {
    arg(params, index, method)?
        .as_string_map(method)
        .map_err(|_| Failure::new("FIELD_TYPE_ERROR", &[&format!("{method} parameter {index}")]))
}

fn class_of(name: &str) -> Option<&'static str> {
    CLASSES.iter().copied().find(|c| *c == name)
}

/// Answers one call. `local` is true on the unix socket.
pub(crate) fn handle(shared: &Arc<Shared>, local: bool, method: &str, params: Vec<Value>) -> Reply {
    match method {
        "session.login_with_password" => return login(shared, local, &params),
        "system.listMethods" => return Ok(list_methods()),
        _ => {}
    }
    let session = text(&params, 0, method)?;
    if !shared.lock().sessions.contains_key(&session) {
        return Err(Failure::new("SESSION_INVALID", &[&session]));
    }
    let args = &params[1..];
    if let Some(inner) = method.strip_prefix("Async.") {
        return start_task(shared, inner, session, args.to_vec());
    }
    match method {
        "session.logout" => {
            shared.lock().sessions.remove(&session);
            Ok(Value::from(""))
        }
        "event.from" => event_from(shared, args),
        "event.inject" => {
            let model = shared.lock();
            Ok(Value::String(format!("{},", model.changes.len())))
        }
        "SR.create" => sr_create(shared, args),
        "SR.probe_ext" => sr_probe(shared, args),
        "SR.destroy" => sr_forget(shared, args, true),
        "SR.forget" => sr_forget(shared, args, false),
        "SR.introduce" => sr_introduce(shared, args),
        "SR.scan" => crate::volumes::sr_scan(shared, &text(args, 0, method)?),
        "VDI.create" => crate::volumes::vdi_create(shared, args),
        "PBD.create" => pbd_create(shared, args),
        "PBD.plug" => pbd_plug(shared, &text(args, 0, method)?),
        "PBD.unplug" => pbd_unplug(shared, &text(args, 0, method)?),
        "PBD.destroy" => {
            let pbd = text(args, 0, method)?;
            let mut model = shared.lock();
            exists(&model, "PBD", &pbd)?;
            if matches!(model.get("PBD", &pbd).and_then(|r| r.get("currently_attached")), Some(Value::Bool(true))) {
                return Err(Failure::new("PBD_IS_PLUGGED", &[&pbd]));
            }
            let (host, sr) = (model.text("PBD", &pbd, "host"), model.text("PBD", &pbd, "SR"));
            model.pull("host", &host, "PBDs", &pbd);
            model.pull("SR", &sr, "PBDs", &pbd);
            model.remove("PBD", &pbd);
            shared.changed.notify_all();
            Ok(Value::from(""))
        }
        "secret.create" => {
            let record =
                arg(args, 0, method)?.as_struct(method).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["args"]))?;
            let value = record.get("value").cloned().unwrap_or(Value::from(""));
            let mut model = shared.lock();
            let reference = model.add("secret", [("value", value), ("other_config", Value::Struct(BTreeMap::new()))]);
            Ok(Value::String(reference))
        }
        "secret.destroy" => {
            let secret = text(args, 0, method)?;
            let mut model = shared.lock();
            exists(&model, "secret", &secret)?;
            model.remove("secret", &secret);
            Ok(Value::from(""))
        }
        "message.create" => {
            let fields = ["name", "priority", "cls", "obj_uuid", "body"];
            let mut values = Vec::new();
            for (i, field) in fields.iter().enumerate() {
                values.push((*field, Value::String(text(args, i, method)?)));
            }
            let mut model = shared.lock();
            let mut record: Vec<(&str, Value)> = values;
            record.push(("timestamp", Value::DateTime("20261125T00:00:00Z".into())));
            Ok(Value::String(model.add("message", record)))
        }
        "task.cancel" => {
            let task = text(args, 0, method)?;
            exists(&shared.lock(), "task", &task)?;
            Ok(Value::from(""))
        }
        "task.destroy" => {
            let task = text(args, 0, method)?;
            let mut model = shared.lock();
            exists(&model, "task", &task)?;
            model.remove("task", &task);
            Ok(Value::from(""))
        }
        "host.call_plugin" => {
            let host = text(args, 0, method)?;
            let info = {
                let model = shared.lock();
                exists(&model, "host", &host)?;
                model.host_info(&host)
            };
            let result = shared.backend.call_plugin(
                &info,
                &text(args, 1, method)?,
                &text(args, 2, method)?,
                &string_map(args, 3, method)?,
            )?;
            Ok(Value::String(result))
        }
        _ if method.contains(".add_to_") || method.contains(".remove_from_") => map_field(shared, method, args),
        _ => generic(&shared.lock(), method, args),
    }
}

/// `<class>.add_to_<field>` and `<class>.remove_from_<field>` for any map
/// field, through [`map_entry`].
fn map_field(shared: &Arc<Shared>, method: &str, args: &[Value]) -> Reply {
    let unknown = || Failure::new("MESSAGE_METHOD_UNKNOWN", &[method]);
    let (class, call) = method.split_once('.').ok_or_else(unknown)?;
    let class = class_of(class).ok_or_else(unknown)?;
    let (field, add) = match (call.strip_prefix("add_to_"), call.strip_prefix("remove_from_")) {
        (Some(field), _) => (field, true),
        (_, Some(field)) => (field, false),
        _ => return Err(unknown()),
    };
    let reference = text(args, 0, method)?;
    if !matches!(shared.lock().get(class, &reference).and_then(|r| r.get(field)), Some(Value::Struct(_))) {
        return Err(unknown());
    }
    map_entry(shared, class, field, method, args, add)
}

fn login(shared: &Arc<Shared>, local: bool, params: &[Value]) -> Reply {
    const METHOD: &str = "session.login_with_password";
    let user = text(params, 0, METHOD)?;
    let password = text(params, 1, METHOD)?;
    if params.len() > 4 {
        return Err(Failure::new("MESSAGE_PARAMETER_COUNT_MISMATCH", &[METHOD, "4", &params.len().to_string()]));
    }
    if !local {
        if let Some(master) = &shared.config.member_of {
            return Err(Failure::new("HOST_IS_SLAVE", &[master]));
        }
        if user != shared.config.user || password != shared.config.password {
            return Err(Failure::new("SESSION_AUTHENTICATION_FAILED", &[&user, "Authentication failure"]));
        }
    }
    let mut model = shared.lock();
    let reference = model.new_ref();
    model.sessions.insert(reference.clone(), local);
    Ok(Value::String(reference))
}

fn list_methods() -> Value {
    let mut methods: Vec<Value> = vec![
        "session.login_with_password",
        "session.logout",
        "system.listMethods",
        "event.from",
        "event.inject",
        "SR.create",
        "SR.probe_ext",
        "SR.destroy",
        "SR.forget",
        "SR.introduce",
        "SR.scan",
        "SR.add_to_other_config",
        "SR.remove_from_other_config",
        "VDI.create",
        "PBD.create",
        "PBD.plug",
        "PBD.unplug",
        "PBD.destroy",
        "secret.create",
        "message.create",
        "task.cancel",
        "task.destroy",
        "host.call_plugin",
        "PBD.add_to_other_config",
        "PBD.remove_from_other_config",
        "SR.add_to_sm_config",
        "SR.remove_from_sm_config",
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    for class in CLASSES {
        for call in ["get_all_records", "get_all", "get_record", "get_by_uuid"] {
            methods.push(Value::String(format!("{class}.{call}")));
        }
    }
    Value::Array(methods)
}

pub(crate) fn exists(model: &Model, class: &str, reference: &str) -> Result<(), Failure> {
    if model.get(class, reference).is_some() {
        Ok(())
    } else {
        Err(Failure::new("HANDLE_INVALID", &[class, reference]))
    }
}

/// `<class>.get_all_records`, `get_all`, `get_record`, `get_by_uuid`,
/// `get_by_name_label` and `get_<field>` for every class.
fn generic(model: &Model, method: &str, args: &[Value]) -> Reply {
    let unknown = || Failure::new("MESSAGE_METHOD_UNKNOWN", &[method]);
    let (class, call) = method.split_once('.').ok_or_else(unknown)?;
    let class = class_of(class).ok_or_else(unknown)?;
    let objects = model.objects.get(class).cloned().unwrap_or_default();
    match call {
        "get_all_records" => {
            Ok(Value::Struct(objects.into_iter().map(|(r, record)| (r, Value::Struct(record))).collect()))
        }
        "get_all" => Ok(Value::Array(objects.into_keys().map(Value::String).collect())),
        "get_by_uuid" => {
            let uuid = text(args, 0, method)?;
            model
                .find(class, "uuid", &uuid)
                .into_iter()
                .next()
                .map(Value::String)
                .ok_or_else(|| Failure::new("UUID_INVALID", &[class, &uuid]))
        }
        "get_by_name_label" => {
            let name = text(args, 0, method)?;
            Ok(Value::Array(model.find(class, "name_label", &name).into_iter().map(Value::String).collect()))
        }
        "get_record" => {
            let reference = text(args, 0, method)?;
            exists(model, class, &reference)?;
            Ok(Value::Struct(objects[&reference].clone()))
        }
        _ => {
            let field = call.strip_prefix("get_").ok_or_else(unknown)?;
            let reference = text(args, 0, method)?;
            exists(model, class, &reference)?;
            objects[&reference].get(field).cloned().ok_or_else(unknown)
        }
    }
}

fn start_task(shared: &Arc<Shared>, method: &str, session: String, args: Vec<Value>) -> Reply {
    let task = shared.lock().add(
        "task",
        [
            ("name_label", Value::String(format!("Async.{method}"))),
            ("name_description", Value::from("")),
            ("status", Value::from("pending")),
            ("progress", Value::Double(0.0)),
            ("created", Value::DateTime("20261125T00:00:00Z".into())),
            ("result", Value::from("")),
            ("error_info", Value::Array(vec![])),
            ("other_config", Value::Struct(BTreeMap::new())),
        ],
    );
    let worker = Arc::clone(shared);
    let task_ref = task.clone();
    let method = method.to_owned();
    std::thread::spawn(move || {
        let mut params = vec![Value::String(session)];
        params.extend(args);
        let outcome = handle(&worker, false, &method, params);
        let mut model = worker.lock();
        match outcome {
            Ok(value) => {
                model.set("task", &task_ref, "result", Value::String(write_value(&value, Encoding::Xapi)));
                model.set("task", &task_ref, "status", Value::from("success"));
            }
            Err(failure) => {
                let info = std::iter::once(failure.code).chain(failure.params).map(Value::String).collect();
                model.set("task", &task_ref, "error_info", Value::Array(info));
                model.set("task", &task_ref, "status", Value::from("failure"));
            }
        }
        model.set("task", &task_ref, "progress", Value::Double(1.0));
        model.set("task", &task_ref, "finished", Value::DateTime("20261125T00:00:01Z".into()));
        worker.changed.notify_all();
    });
    Ok(Value::String(task))
}

fn event_from(shared: &Arc<Shared>, args: &[Value]) -> Reply {
    const METHOD: &str = "event.from";
    let classes: Vec<String> = arg(args, 0, METHOD)?
        .as_strings(METHOD)
        .map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["classes"]))?
        .into_iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let token = text(args, 1, METHOD)?;
    let since: usize = if token.is_empty() {
        0
    } else {
        token.trim_end_matches(',').parse().map_err(|_| Failure::new("EVENT_FROM_TOKEN_PARSE_FAILURE", &[&token]))?
    };
    let timeout = arg(args, 2, METHOD)?.as_f64(METHOD).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["timeout"]))?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    let wanted = |class: &str| classes.iter().any(|c| c == "*" || c == class || c.starts_with(&format!("{class}/")));
    let mut model = shared.lock();
    loop {
        let events: Vec<Value> = model
            .changes
            .iter()
            .skip(since)
            .filter(|c| wanted(&c.class))
            .map(|c| {
                let mut event = vec![
                    ("id", Value::Int(c.id)),
                    ("timestamp", Value::from("0.0")),
                    ("class", Value::String(c.class.clone())),
                    ("operation", Value::from(c.operation)),
                    ("ref", Value::String(c.reference.clone())),
                ];
                if let Some(snapshot) = &c.snapshot {
                    event.push(("snapshot", snapshot.clone()));
                }
                Value::record(event)
            })
            .collect();
        let now = Instant::now();
        if !events.is_empty() || now >= deadline {
            let counts = CLASSES
                .iter()
                .filter(|c| wanted(&c.to_ascii_lowercase()))
                .map(|c| {
                    let count = model.objects.get(c).map_or(0, std::collections::BTreeMap::len);
                    (c.to_ascii_lowercase(), Value::Int(i64::try_from(count).unwrap_or(i64::MAX)))
                })
                .collect();
            return Ok(Value::record([
                ("events", Value::Array(events)),
                ("valid_ref_counts", Value::Struct(counts)),
                ("token", Value::String(format!("{},", model.changes.len()))),
            ]));
        }
        model = shared.wait(model, deadline - now);
    }
}

/// Moves `*password` keys into secrets, as XAPI does on `SR.create` and
/// `SR.probe`.
fn move_passwords_to_secrets(model: &mut Model, config: BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .into_iter()
        .map(|(key, value)| {
            if key.ends_with("password") {
                let secret = model
                    .add("secret", [("value", Value::String(value)), ("other_config", Value::Struct(BTreeMap::new()))]);
                (format!("{key}_secret"), model.text("secret", &secret, "uuid"))
            } else {
                (key, value)
            }
        })
        .collect()
}

fn sr_create(shared: &Arc<Shared>, args: &[Value]) -> Reply {
    const METHOD: &str = "SR.create";
    let host = text(args, 0, METHOD)?;
    let device_config = string_map(args, 1, METHOD)?;
    let physical_size =
        arg(args, 2, METHOD)?.as_i64(METHOD).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["physical_size"]))?;
    let name_label = text(args, 3, METHOD)?;
    let name_description = text(args, 4, METHOD)?;
    let sr_type = text(args, 5, METHOD)?;
    let content_type = text(args, 6, METHOD)?;
    let shared_sr = arg(args, 7, METHOD)?.as_bool(METHOD).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["shared"]))?;
    let sm_config = args.get(8).map(|v| v.as_string_map(METHOD)).transpose().ok().flatten().unwrap_or_default();
    let (names, sr, sr_uuid, pbds, master_info) = {
        let mut model = shared.lock();
        exists(&model, "host", &host)?;
        if model.find("SM", "type", &sr_type).is_empty() {
            return Err(Failure::new("SR_UNKNOWN_DRIVER", &[&sr_type]));
        }
        let device_config = move_passwords_to_secrets(&mut model, device_config);
        let names = (name_label.clone(), name_description.clone());
        let sr = add_sr(
            &mut model,
            None,
            NewSrRecord {
                name_label,
                name_description,
                sr_type,
                content_type,
                shared: shared_sr,
                sm_config,
                physical_size,
            },
        );
        let hosts = if shared_sr { model.hosts_master_first() } else { vec![host.clone()] };
        let pbds: Vec<String> = hosts.iter().map(|h| add_pbd(&mut model, h, &sr, &device_config)).collect();
        let runs_on = if shared_sr { model.master() } else { host };
        let sr_uuid = model.text("SR", &sr, "uuid");
        (names, sr, sr_uuid, pbds, (model.host_info(&runs_on), device_config))
    };
    let (runs_on, device_config) = master_info;
    let new_sr = crate::backend::NewSr { uuid: sr_uuid, name_label: names.0, name_description: names.1, device_config };
    match shared.backend.sr_create(&runs_on, &new_sr) {
        Ok(stored) => {
            let mut model = shared.lock();
            for pbd in &pbds {
                model.set("PBD", pbd, "device_config", Value::map(&stored));
            }
        }
        Err(failure) => {
            let mut model = shared.lock();
            for pbd in &pbds {
                let host = model.text("PBD", pbd, "host");
                model.pull("host", &host, "PBDs", pbd);
                model.remove("PBD", pbd);
            }
            model.remove("SR", &sr);
            shared.changed.notify_all();
            return Err(failure);
        }
    }
    // XAPI plugs every PBD and only logs those that fail: the SR exists and
    // the caller finds unplugged PBDs by reading them.
    for pbd in &pbds {
        let _ = pbd_plug(shared, pbd);
    }
    shared.changed.notify_all();
    Ok(Value::String(sr))
}

/// The fields of a new SR record, from `SR.create` or `SR.introduce`.
struct NewSrRecord {
    name_label: String,
    name_description: String,
    sr_type: String,
    content_type: String,
    shared: bool,
    sm_config: BTreeMap<String, String>,
    physical_size: i64,
}

fn add_sr(model: &mut Model, uuid: Option<String>, sr: NewSrRecord) -> String {
    let uuid = uuid.unwrap_or_else(|| model.new_uuid());
    model.add_with_uuid(
        "SR",
        uuid,
        [
            ("name_label", Value::String(sr.name_label)),
            ("name_description", Value::String(sr.name_description)),
            ("type", Value::String(sr.sr_type)),
            ("content_type", Value::String(sr.content_type)),
            ("shared", Value::Bool(sr.shared)),
            ("PBDs", Value::Array(vec![])),
            ("VDIs", Value::Array(vec![])),
            ("physical_size", Value::Int(sr.physical_size)),
            ("physical_utilisation", Value::Int(0)),
            ("virtual_allocation", Value::Int(0)),
            ("sm_config", Value::map(&sr.sm_config)),
            ("other_config", Value::Struct(BTreeMap::new())),
            ("tags", Value::Array(vec![])),
            ("allowed_operations", Value::Array(vec![])),
            ("current_operations", Value::Struct(BTreeMap::new())),
            ("clustered", Value::Bool(false)),
            ("is_tools_sr", Value::Bool(false)),
        ],
    )
}

/// `SR.introduce(uuid, name_label, name_description, type, content_type,
/// shared, sm_config)`: a database record only, no PBD, nothing attached
/// (xapi's `Xapi_sr.introduce`); `SR_UUID_EXISTS` when the UUID is taken.
fn sr_introduce(shared: &Arc<Shared>, args: &[Value]) -> Reply {
    const METHOD: &str = "SR.introduce";
    let uuid = text(args, 0, METHOD)?;
    let name_label = text(args, 1, METHOD)?;
    let name_description = text(args, 2, METHOD)?;
    let sr_type = text(args, 3, METHOD)?;
    let content_type = text(args, 4, METHOD)?;
    let shared_sr = arg(args, 5, METHOD)?.as_bool(METHOD).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["shared"]))?;
    let sm_config = args.get(6).map(|v| v.as_string_map(METHOD)).transpose().ok().flatten().unwrap_or_default();
    let mut model = shared.lock();
    if !model.find("SR", "uuid", &uuid).is_empty() {
        return Err(Failure::new("SR_UUID_EXISTS", &[&uuid]));
    }
    let sr = add_sr(
        &mut model,
        Some(uuid),
        NewSrRecord {
            name_label,
            name_description,
            sr_type,
            content_type,
            shared: shared_sr,
            sm_config,
            physical_size: 0,
        },
    );
    shared.changed.notify_all();
    Ok(Value::String(sr))
}

/// `<class>.add_to_<field>(ref, key, value)` (`MAP_DUPLICATE_KEY` when the
/// key is there) and `remove_from_<field>(ref, key)` (no error when absent).
fn map_entry(shared: &Arc<Shared>, class: &'static str, field: &str, method: &str, args: &[Value], add: bool) -> Reply {
    let reference = text(args, 0, method)?;
    let key = text(args, 1, method)?;
    let mut model = shared.lock();
    exists(&model, class, &reference)?;
    let mut map = model
        .get(class, &reference)
        .and_then(|r| r.get(field))
        .and_then(|v| v.as_string_map(field).ok())
        .unwrap_or_default();
    let value = if add {
        if map.contains_key(&key) {
            return Err(Failure::new("MAP_DUPLICATE_KEY", &[class, field, &reference, &key]));
        }
        let value = text(args, 2, method)?;
        map.insert(key.clone(), value.clone());
        Some(value)
    } else if map.remove(&key).is_none() {
        return Ok(Value::from(""));
    } else {
        None
    };
    model.set(class, &reference, field, Value::map(&map));
    model.map_updates.push(MapUpdate { class, reference, field: field.to_owned(), key, value });
    shared.changed.notify_all();
    Ok(Value::from(""))
}

fn add_pbd(model: &mut Model, host: &str, sr: &str, device_config: &BTreeMap<String, String>) -> String {
    let pbd = model.add(
        "PBD",
        [
            ("host", Value::from(host)),
            ("SR", Value::from(sr)),
            ("device_config", Value::map(device_config)),
            ("currently_attached", Value::Bool(false)),
            ("other_config", Value::Struct(BTreeMap::new())),
        ],
    );
    model.push("host", host, "PBDs", &pbd);
    model.push("SR", sr, "PBDs", &pbd);
    pbd
}

fn pbd_create(shared: &Arc<Shared>, args: &[Value]) -> Reply {
    const METHOD: &str = "PBD.create";
    let record = arg(args, 0, METHOD)?.as_struct(METHOD).map_err(|_| Failure::new("FIELD_TYPE_ERROR", &["args"]))?;
    let field = |name: &str| record.get(name).and_then(|v| v.as_str(name).ok()).unwrap_or_default().to_owned();
    let (host, sr) = (field("host"), field("SR"));
    let device_config = record.get("device_config").and_then(|v| v.as_string_map(METHOD).ok()).unwrap_or_default();
    let mut model = shared.lock();
    exists(&model, "host", &host)?;
    exists(&model, "SR", &sr)?;
    if device_config.contains_key("SRmaster") {
        return Err(Failure::new("VALUE_NOT_SUPPORTED", &["device_config", "SRmaster", "internal use only"]));
    }
    if model.find("PBD", "SR", &sr).iter().any(|p| model.text("PBD", p, "host") == host) {
        return Err(Failure::new("PBD_EXISTS", &[&sr, &host]));
    }
    let pbd = add_pbd(&mut model, &host, &sr, &device_config);
    Ok(Value::String(pbd))
}

fn pbd_plug(shared: &Arc<Shared>, pbd: &str) -> Reply {
    let (info, sr_uuid, device_config) = {
        let model = shared.lock();
        exists(&model, "PBD", pbd)?;
        let sr = model.text("PBD", pbd, "SR");
        let host = model.text("PBD", pbd, "host");
        let shared_sr = matches!(model.get("SR", &sr).and_then(|r| r.get("shared")), Some(Value::Bool(true)));
        let attached_elsewhere = model.find("PBD", "SR", &sr).iter().any(|p| {
            p != pbd && matches!(model.get("PBD", p).and_then(|r| r.get("currently_attached")), Some(Value::Bool(true)))
        });
        if !shared_sr && attached_elsewhere {
            return Err(Failure::new("SR_NOT_SHARABLE", &[&sr, &host]));
        }
        let config =
            model.get("PBD", pbd).and_then(|r| r.get("device_config")).and_then(|v| v.as_string_map("dc").ok());
        (model.host_info(&host), model.text("SR", &sr, "uuid"), config.unwrap_or_default())
    };
    shared.backend.pbd_plug(&info, &sr_uuid, &device_config)?;
    shared.lock().set("PBD", pbd, "currently_attached", Value::Bool(true));
    shared.changed.notify_all();
    Ok(Value::from(""))
}

fn pbd_unplug(shared: &Arc<Shared>, pbd: &str) -> Reply {
    let (info, sr_uuid) = {
        let model = shared.lock();
        exists(&model, "PBD", pbd)?;
        let sr = model.text("PBD", pbd, "SR");
        (model.host_info(&model.text("PBD", pbd, "host")), model.text("SR", &sr, "uuid"))
    };
    shared.backend.pbd_unplug(&info, &sr_uuid)?;
    shared.lock().set("PBD", pbd, "currently_attached", Value::Bool(false));
    shared.changed.notify_all();
    Ok(Value::from(""))
}

fn sr_probe(shared: &Arc<Shared>, args: &[Value]) -> Reply {
    const METHOD: &str = "SR.probe_ext";
    let host = text(args, 0, METHOD)?;
    let device_config = string_map(args, 1, METHOD)?;
    let sr_type = text(args, 2, METHOD)?;
    let (info, device_config) = {
        let mut model = shared.lock();
        exists(&model, "host", &host)?;
        if model.find("SM", "type", &sr_type).is_empty() {
            return Err(Failure::new("SR_UNKNOWN_DRIVER", &[&sr_type]));
        }
        let config = move_passwords_to_secrets(&mut model, device_config);
        (model.host_info(&host), config)
    };
    Ok(Value::Array(shared.backend.sr_probe(&info, &device_config)?))
}

fn sr_forget(shared: &Arc<Shared>, args: &[Value], destroy: bool) -> Reply {
    let sr = text(args, 0, if destroy { "SR.destroy" } else { "SR.forget" })?;
    let (pbds, info, sr_uuid, device_config) = {
        let model = shared.lock();
        exists(&model, "SR", &sr)?;
        let pbds = model.find("PBD", "SR", &sr);
        if pbds
            .iter()
            .any(|p| matches!(model.get("PBD", p).and_then(|r| r.get("currently_attached")), Some(Value::Bool(true))))
        {
            return Err(Failure::new("SR_HAS_PBD", &[&sr]));
        }
        let config = pbds
            .first()
            .and_then(|p| model.get("PBD", p))
            .and_then(|r| r.get("device_config"))
            .and_then(|v| v.as_string_map("device_config").ok())
            .unwrap_or_default();
        (pbds, model.host_info(&model.master()), model.text("SR", &sr, "uuid"), config)
    };
    if destroy {
        shared.backend.sr_destroy(&info, &sr_uuid, &device_config)?;
    }
    let mut model = shared.lock();
    for pbd in pbds {
        let host = model.text("PBD", &pbd, "host");
        model.pull("host", &host, "PBDs", &pbd);
        model.remove("PBD", &pbd);
    }
    // xapi's `really_forget` drops the SR's VDI records with it.
    for vdi in model.find("VDI", "SR", &sr) {
        model.remove("VDI", &vdi);
    }
    model.remove("SR", &sr);
    shared.changed.notify_all();
    Ok(Value::from(""))
}
