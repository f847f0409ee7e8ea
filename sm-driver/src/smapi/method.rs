//! The catalogue of SMAPIv3 (API 5.0) methods and their named parameters.
//!
//! xapi-storage-script runs `<plugin dir>/<Interface>.<method> --json` and looks
//! the file up case-insensitively, which is why the conventional file name
//! `Plugin.Query` answers the call `Plugin.query`. This table is what the
//! driver knows of the IDL: it lets the entry point tell an unknown method from
//! one that is known but not implemented yet, and validate every parameter by
//! name and type before any handler runs.

use std::fmt;

/// Which plugin directory a method lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// `volume/org.xen.xapi.storage.nvmetcp/`: Plugin, SR and Volume.
    Volume,
    /// `datapath/<scheme>/`: Plugin, Datapath and Data.
    Datapath,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Volume => "volume",
            Self::Datapath => "datapath",
        })
    }
}

/// An SMAPIv3 interface (the part of the method name before the dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// `Plugin.*`: served by both plugin kinds.
    Plugin,
    /// `SR.*`: volume plugin.
    Sr,
    /// `Volume.*`: volume plugin.
    Volume,
    /// `Datapath.*`: datapath plugin.
    Datapath,
    /// `Data.*`: datapath plugin.
    Data,
}

impl Interface {
    /// The interface name as it appears in method names.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Plugin => "Plugin",
            Self::Sr => "SR",
            Self::Volume => "Volume",
            Self::Datapath => "Datapath",
            Self::Data => "Data",
        }
    }

    /// Whether a plugin of `kind` serves this interface.
    #[must_use]
    pub const fn served_by(self, kind: PluginKind) -> bool {
        matches!(
            (self, kind),
            (Self::Plugin, _)
                | (Self::Sr | Self::Volume, PluginKind::Volume)
                | (Self::Datapath | Self::Data, PluginKind::Datapath)
        )
    }
}

/// The JSON type of a parameter, as rpclib unmarshals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A JSON string.
    String,
    /// `int64`: a JSON integer (rpclib also accepts a numeric string).
    Int64,
    /// `int`: a JSON integer.
    Int,
    /// A JSON boolean.
    Bool,
    /// `(string * string) list`: a JSON object of strings.
    StringMap,
    /// A `Data` operation: `["Copy"|"Mirror", [src, dst]]`.
    Operation,
    /// A block list: `{"blocksize": int, "ranges": [[int64, int64], …]}`.
    BlockList,
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "a string",
            Self::Int64 | Self::Int => "an integer",
            Self::Bool => "a boolean",
            Self::StringMap => "an object of strings",
            Self::Operation => "an operation [\"Copy\"|\"Mirror\", [src, dst]]",
            Self::BlockList => "a block list {\"blocksize\", \"ranges\"}",
        })
    }
}

/// A named parameter of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The JSON key.
    pub name: &'static str,
    /// Its type.
    pub kind: ParamKind,
}

/// One SMAPIv3 method.
#[derive(Debug, PartialEq, Eq)]
pub struct Method {
    /// Its interface.
    pub interface: Interface,
    /// The method name after the dot, as in the IDL (`query`, `attach`, …).
    pub name: &'static str,
    /// Named parameters, `dbg` first.
    pub params: &'static [Param],
}

impl Method {
    /// The call name, `<Interface>.<method>` (`Plugin.query`, `SR.attach`).
    #[must_use]
    pub fn call_name(&self) -> String {
        format!("{}.{}", self.interface.name(), self.name)
    }

    /// The file name plugins conventionally install (`Plugin.Query` for
    /// `Plugin.query`, otherwise the call name).
    #[must_use]
    pub fn file_name(&self) -> String {
        if self.interface == Interface::Plugin && self.name == "query" {
            "Plugin.Query".to_owned()
        } else {
            self.call_name()
        }
    }

    /// Finds a method by name, case-insensitively as xapi-storage-script does.
    #[must_use]
    pub fn lookup(name: &str) -> Option<&'static Self> {
        CATALOGUE.iter().find(|m| m.call_name().eq_ignore_ascii_case(name))
    }

    /// The declared parameter called `name`.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.interface.name(), self.name)
    }
}

macro_rules! params {
    ($($name:literal : $kind:ident),* $(,)?) => {
        &[Param { name: "dbg", kind: ParamKind::String }, $(Param { name: $name, kind: ParamKind::$kind }),*]
    };
}

macro_rules! method {
    ($interface:ident . $name:literal ( $($params:tt)* )) => {
        Method { interface: Interface::$interface, name: $name, params: params!($($params)*) }
    };
}

/// Every method of the SMAPIv3 API 5.0 IDL (control, data and plugin interfaces).
pub static CATALOGUE: &[Method] = &[
    method!(Plugin."query"()),
    method!(Plugin."diagnostics"()),
    method!(Plugin."ls"()),
    method!(Sr."probe"("configuration": StringMap)),
    method!(Sr."create"("uuid": String, "configuration": StringMap, "name": String, "description": String)),
    method!(Sr."attach"("configuration": StringMap)),
    method!(Sr."detach"("sr": String)),
    method!(Sr."destroy"("sr": String)),
    method!(Sr."stat"("sr": String)),
    method!(Sr."ls"("sr": String)),
    method!(Sr."set_name"("sr": String, "new_name": String)),
    method!(Sr."set_description"("sr": String, "new_description": String)),
    method!(Volume."create"("sr": String, "name": String, "description": String, "size": Int64, "sharable": Bool)),
    method!(Volume."snapshot"("sr": String, "key": String)),
    method!(Volume."clone"("sr": String, "key": String)),
    method!(Volume."copy"("sr": String, "key": String, "dest_sr": String)),
    method!(Volume."destroy"("sr": String, "key": String)),
    method!(Volume."set_name"("sr": String, "key": String, "new_name": String)),
    method!(Volume."set_description"("sr": String, "key": String, "new_description": String)),
    method!(Volume."set"("sr": String, "key": String, "k": String, "v": String)),
    method!(Volume."unset"("sr": String, "key": String, "k": String)),
    method!(Volume."resize"("sr": String, "key": String, "new_size": Int64)),
    method!(Volume."stat"("sr": String, "key": String)),
    method!(Volume."compare"("sr": String, "key": String, "key2": String)),
    method!(Volume."similar_content"("sr": String, "key": String)),
    method!(Volume."enable_cbt"("sr": String, "key": String)),
    method!(Volume."disable_cbt"("sr": String, "key": String)),
    method!(Volume."data_destroy"("sr": String, "key": String)),
    method!(Volume."list_changed_blocks"("sr": String, "key": String, "key2": String, "offset": Int64, "length": Int)),
    method!(Volume."compose"("sr": String, "key": String, "key2": String)),
    method!(Volume."revert"("sr": String, "snapshot": String, "key": String)),
    method!(Datapath."open"("uri": String, "persistent": Bool)),
    method!(Datapath."attach"("uri": String, "domain": String)),
    method!(Datapath."activate"("uri": String, "domain": String)),
    method!(Datapath."activate_readonly"("uri": String, "domain": String)),
    method!(Datapath."deactivate"("uri": String, "domain": String)),
    method!(Datapath."detach"("uri": String, "domain": String)),
    method!(Datapath."close"("uri": String)),
    method!(Datapath."import_activate"("uri": String, "domain": String)),
    method!(Data."copy"("uri": String, "domain": String, "remote": String, "blocklist": BlockList)),
    method!(Data."mirror"("uri": String, "domain": String, "remote": String)),
    method!(Data."stat"("operation": Operation)),
    method!(Data."cancel"("operation": Operation)),
    method!(Data."destroy"("operation": Operation)),
    method!(Data."ls"()),
];

#[cfg(test)]
mod tests {
    use super::{Interface, Method, PluginKind, CATALOGUE};

    #[test]
    fn lookup_is_case_insensitive_like_xapi_storage_script() {
        for name in ["Plugin.Query", "Plugin.query", "plugin.QUERY", "sr.ATTACH", "Datapath.Activate"] {
            assert!(Method::lookup(name).is_some(), "{name}");
        }
        assert!(Method::lookup("SR.explode").is_none());
        assert!(Method::lookup("SRattach").is_none());
        assert_eq!(Method::lookup("plugin.query").map(Method::file_name).as_deref(), Some("Plugin.Query"));
    }

    #[test]
    fn call_names_are_unique_and_dbg_comes_first() {
        let mut names: Vec<String> = CATALOGUE.iter().map(|m| m.call_name().to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        assert!(CATALOGUE.iter().all(|m| m.params[0].name == "dbg"));
    }

    #[test]
    fn interfaces_split_between_the_two_plugin_kinds() {
        assert!(Interface::Plugin.served_by(PluginKind::Volume) && Interface::Plugin.served_by(PluginKind::Datapath));
        assert!(Interface::Sr.served_by(PluginKind::Volume) && !Interface::Sr.served_by(PluginKind::Datapath));
        assert!(Interface::Data.served_by(PluginKind::Datapath) && !Interface::Volume.served_by(PluginKind::Datapath));
    }
}
