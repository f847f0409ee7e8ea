//! The pool model: objects by class and ref, each a record of XAPI's field
//! names, plus the event log that `event.from` reads.

use std::collections::BTreeMap;

use xapi_client::Value;

use crate::backend::HostInfo;

/// A storage type with an SM record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmType {
    /// `type`, e.g. `nvmetcp`.
    pub sr_type: String,
    /// `name_label`.
    pub name: String,
    /// device-config keys and descriptions.
    pub configuration: BTreeMap<String, String>,
    /// Feature names (each at version 1).
    pub features: Vec<String>,
}

impl SmType {
    /// A type with no configuration keys or features.
    #[must_use]
    pub fn named(sr_type: &str) -> Self {
        Self { sr_type: sr_type.into(), name: sr_type.into(), configuration: BTreeMap::new(), features: vec![] }
    }
}

/// The emulated pool.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host names; the first is the master.
    pub hosts: Vec<String>,
    /// SM records present (types the pool can create).
    pub sm_types: Vec<SmType>,
    /// The user and password accepted over TCP.
    pub user: String,
    /// The password.
    pub password: String,
    /// When set, this instance is a pool member whose master has this
    /// address: logins over TCP fail with `HOST_IS_SLAVE`.
    pub member_of: Option<String>,
    /// The master certificate fingerprint a member reports on request.
    pub master_thumbprint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hosts: vec!["xcp-ng-1".into()],
            sm_types: vec![SmType::named("lvm"), SmType::named("nvmetcp")],
            user: "root".into(),
            password: "xenroot".into(),
            member_of: None,
            master_thumbprint: None,
        }
    }
}

/// One change, as `event.from` reports it.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: i64,
    pub class: String,
    pub operation: &'static str,
    pub reference: String,
    pub snapshot: Option<Value>,
}

/// One change of a map field (`other_config`, `sm_config`) made by
/// `add_to_<field>` or `remove_from_<field>`, in the order they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapUpdate {
    /// `PBD`, `SR`, …
    pub class: &'static str,
    /// The object.
    pub reference: String,
    /// `other_config`, …
    pub field: String,
    /// The key.
    pub key: String,
    /// The value added, or `None` for a removal.
    pub value: Option<String>,
}

/// The classes the model holds, with their wire names.
pub const CLASSES: &[&str] = &["pool", "host", "host_metrics", "SM", "SR", "PBD", "VDI", "secret", "message", "task"];

/// Objects and events.
#[derive(Debug, Default)]
pub struct Model {
    pub objects: BTreeMap<&'static str, BTreeMap<String, BTreeMap<String, Value>>>,
    pub sessions: BTreeMap<String, bool>,
    pub changes: Vec<Change>,
    pub map_updates: Vec<MapUpdate>,
    counter: u64,
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn empty_map() -> Value {
    Value::Struct(BTreeMap::new())
}

impl Model {
    /// A model of the configured pool.
    pub fn new(config: &Config) -> Self {
        let mut model = Self::default();
        for class in CLASSES {
            model.objects.insert(class, BTreeMap::new());
        }
        let mut host_refs = Vec::new();
        for (i, name) in config.hosts.iter().enumerate() {
            let metrics = model.add("host_metrics", [("live", Value::Bool(true))]);
            let reference = model.add(
                "host",
                [
                    ("name_label", s(name)),
                    ("name_description", s("")),
                    ("hostname", s(name)),
                    ("address", Value::String(format!("192.0.2.{}", 10 + i))),
                    ("enabled", Value::Bool(true)),
                    ("metrics", Value::String(metrics)),
                    ("PBDs", Value::Array(vec![])),
                    ("software_version", Value::record([("product_version", s("8.3.0")), ("xapi", s("24.39"))])),
                    ("other_config", empty_map()),
                    ("API_version_major", Value::Int(2)),
                    ("API_version_minor", Value::Int(21)),
                    ("last_software_update", Value::DateTime("19700101T00:00:00Z".into())),
                ],
            );
            host_refs.push(reference);
        }
        model.add(
            "pool",
            [
                ("name_label", s("")),
                ("name_description", s("")),
                ("master", Value::String(host_refs.first().cloned().unwrap_or_else(|| "OpaqueRef:NULL".into()))),
                ("default_SR", s("OpaqueRef:NULL")),
                ("other_config", empty_map()),
                ("ha_enabled", Value::Bool(false)),
                ("last_update_sync", Value::DateTime("19700101T00:00:00Z".into())),
            ],
        );
        for sm in &config.sm_types {
            let features = sm.features.iter().map(|f| (f.clone(), Value::Int(1))).collect();
            model.add(
                "SM",
                [
                    ("name_label", s(&sm.name)),
                    ("name_description", s("")),
                    ("type", s(&sm.sr_type)),
                    ("vendor", s("")),
                    ("copyright", s("")),
                    ("version", s("1.0")),
                    ("required_api_version", s("5.0")),
                    ("configuration", Value::map(&sm.configuration)),
                    ("capabilities", Value::Array(sm.features.iter().map(|f| s(f)).collect())),
                    ("features", Value::Struct(features)),
                    ("other_config", empty_map()),
                    ("driver_filename", Value::String(format!("/opt/xensource/sm/{}SR", sm.sr_type))),
                    ("required_cluster_stack", Value::Array(vec![])),
                    ("supported_image_formats", Value::Array(vec![])),
                ],
            );
        }
        model.changes.clear();
        model
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A fresh ref.
    pub fn new_ref(&mut self) -> String {
        let n = self.next();
        format!("OpaqueRef:{n:08x}-5eed-4000-8000-{n:012x}")
    }

    /// A fresh UUID.
    pub fn new_uuid(&mut self) -> String {
        let n = self.next();
        format!("{n:08x}-e31a-4a7e-9000-{n:012x}")
    }

    /// Adds an object (a UUID is added) and returns its ref.
    pub fn add<'a>(&mut self, class: &'static str, fields: impl IntoIterator<Item = (&'a str, Value)>) -> String {
        let uuid = self.new_uuid();
        self.add_with_uuid(class, uuid, fields)
    }

    /// Adds an object with the given UUID and returns its ref.
    pub fn add_with_uuid<'a>(
        &mut self,
        class: &'static str,
        uuid: String,
        fields: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> String {
        let reference = self.new_ref();
        let mut record: BTreeMap<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        record.insert("uuid".into(), Value::String(uuid));
        self.objects.entry(class).or_default().insert(reference.clone(), record);
        self.record_change(class, "add", &reference);
        reference
    }

    /// Removes an object.
    pub fn remove(&mut self, class: &'static str, reference: &str) {
        if self.objects.entry(class).or_default().remove(reference).is_some() {
            self.record_change(class, "del", reference);
        }
    }

    /// Sets one field of an object.
    pub fn set(&mut self, class: &'static str, reference: &str, field: &str, value: Value) {
        if let Some(record) = self.objects.entry(class).or_default().get_mut(reference) {
            record.insert(field.to_owned(), value);
            self.record_change(class, "mod", reference);
        }
    }

    /// One object's record.
    pub fn get(&self, class: &str, reference: &str) -> Option<&BTreeMap<String, Value>> {
        self.objects.get(class).and_then(|objects| objects.get(reference))
    }

    /// One field of an object, as text.
    pub fn text(&self, class: &str, reference: &str, field: &str) -> String {
        match self.get(class, reference).and_then(|r| r.get(field)) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        }
    }

    /// Refs of a class whose `field` equals `value`.
    pub fn find(&self, class: &str, field: &str, value: &str) -> Vec<String> {
        self.objects
            .get(class)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|(_, r)| matches!(r.get(field), Some(Value::String(v)) if v == value))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds `item` to the array field `field` of an object.
    pub fn push(&mut self, class: &'static str, reference: &str, field: &str, item: &str) {
        let mut items = match self.get(class, reference).and_then(|r| r.get(field)) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        items.push(Value::from(item));
        self.set(class, reference, field, Value::Array(items));
    }

    /// Removes `item` from the array field `field` of an object.
    pub fn pull(&mut self, class: &'static str, reference: &str, field: &str, item: &str) {
        if let Some(Value::Array(items)) = self.get(class, reference).and_then(|r| r.get(field)).cloned() {
            let kept = items.into_iter().filter(|v| !matches!(v, Value::String(s) if s == item)).collect();
            self.set(class, reference, field, Value::Array(kept));
        }
    }

    /// The host's identity for the backend.
    pub fn host_info(&self, reference: &str) -> HostInfo {
        HostInfo {
            uuid: self.text("host", reference, "uuid"),
            name_label: self.text("host", reference, "name_label"),
            address: self.text("host", reference, "address"),
        }
    }

    /// The master's ref.
    pub fn master(&self) -> String {
        self.objects
            .get("pool")
            .and_then(|p| p.values().next())
            .and_then(|p| p.get("master"))
            .and_then(|m| m.as_str("master").ok())
            .unwrap_or("OpaqueRef:NULL")
            .to_owned()
    }

    /// All host refs, master first.
    pub fn hosts_master_first(&self) -> Vec<String> {
        let master = self.master();
        let mut hosts: Vec<String> = self.objects.get("host").map(|h| h.keys().cloned().collect()).unwrap_or_default();
        hosts.sort_by_key(|h| *h != master);
        hosts
    }

    fn record_change(&mut self, class: &str, operation: &'static str, reference: &str) {
        let id = i64::try_from(self.changes.len()).unwrap_or(i64::MAX) + 1;
        let snapshot = self.get(class, reference).map(|r| Value::Struct(r.clone()));
        self.changes.push(Change {
            id,
            class: class.to_ascii_lowercase(),
            operation,
            reference: reference.to_owned(),
            snapshot,
        });
    }
}
