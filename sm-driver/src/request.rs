//! One typed request per implemented SR, Volume and Datapath method, built
//! once by dispatch from the validated parameters ([`Params`]).
//!
//! Each field is named after its parameter and parsed by the one parser of
//! its type, so a handler receives values that are already what they claim
//! to be: an SR handle is an [`SrHandle`], a size is a positive
//! [`VolumeSize`], device-config is the map the per-purpose configs
//! ([`crate::sr_config`]) read. A request that does not parse fails before
//! any handler runs, with the error naming the parameter.

use crate::error::{CallError, Failure, VolumeError};
use crate::ids::{SrUuid, VolumeKey, VolumeUri};
use crate::smapi::params::Params;
use crate::smapi::types::StringMap;
use crate::sr_state::{uuid_of_handle, StateError};

/// A request of one method, built from its validated parameters.
pub trait Request: Sized {
    /// Reads every field from `params`.
    ///
    /// # Errors
    /// The first parameter that does not parse, as the call's failure.
    fn from_params(params: &Params) -> Result<Self, Failure>;
}

/// How a field of a request is read from its parameter.
trait FromParam: Sized {
    fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure>;
}

macro_rules! decoded {
    ($($ty:ty),*) => {$(
        impl FromParam for $ty {
            fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure> {
                Ok(params.get(name)?)
            }
        }
    )*};
}

decoded!(String, bool, StringMap);

/// The `sr` handle `SR.attach` returned (`nvmetcp://sr/<uuid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrHandle(SrUuid);

impl SrHandle {
    /// Parses a handle.
    ///
    /// # Errors
    /// [`StateError::BadHandle`] for anything but `nvmetcp://sr/<uuid>`.
    pub fn parse(handle: &str) -> Result<Self, StateError> {
        let uuid = uuid_of_handle(handle)?;
        uuid.parse().map(Self).map_err(|_| StateError::BadHandle(handle.to_owned()))
    }

    /// The SR's uuid.
    #[must_use]
    pub fn uuid(&self) -> &SrUuid {
        &self.0
    }
}

impl FromParam for SrHandle {
    fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure> {
        let handle: String = params.get(name).map_err(|e| CallError::State(StateError::BadHandle(e.to_string())))?;
        Ok(Self::parse(&handle)?)
    }
}

impl FromParam for SrUuid {
    fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure> {
        let uuid: String = params.get(name)?;
        Ok(uuid.parse().map_err(|_| CallError::BadUuid(uuid))?)
    }
}

impl FromParam for VolumeKey {
    fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure> {
        let key: String = params.get(name)?;
        Ok(key.parse().map_err(|_| VolumeError::BadKey(key))?)
    }
}

impl FromParam for VolumeUri {
    fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure> {
        let uri: String = params.get(name)?;
        Ok(uri.parse().map_err(|_| VolumeError::BadUri(uri))?)
    }
}

/// A volume size in bytes: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSize(u64);

impl VolumeSize {
    /// The size as xapi passed it (`int64`), if positive.
    ///
    /// # Errors
    /// [`VolumeError::BadSize`] for zero or less.
    pub fn new(size: i64) -> Result<Self, VolumeError> {
        u64::try_from(size).ok().filter(|s| *s > 0).map(Self).ok_or(VolumeError::BadSize(size))
    }

    /// The size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromParam for VolumeSize {
    fn from_param(params: &Params, name: &'static str) -> Result<Self, Failure> {
        Ok(Self::new(params.get(name)?)?)
    }
}

macro_rules! requests {
    ($($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? })*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone)]
        #[allow(missing_docs)] // each field is the parameter of its name
        pub struct $name { $(pub $field: $ty),* }

        impl Request for $name {
            fn from_params(params: &Params) -> Result<Self, Failure> {
                Ok(Self { $($field: FromParam::from_param(params, stringify!($field))?),* })
            }
        }
    )*};
}

requests! {
    /// `SR.probe`.
    SrProbe { configuration: StringMap }
    /// `SR.create`.
    SrCreate { uuid: SrUuid, configuration: StringMap, name: String, description: String }
    /// `SR.attach`.
    SrAttach { configuration: StringMap }
    /// `SR.detach`.
    SrDetach { sr: SrHandle }
    /// `SR.destroy`.
    SrDestroy { sr: SrHandle }
    /// `SR.stat`.
    SrStat { sr: SrHandle }
    /// `SR.ls`.
    SrLs { sr: SrHandle }
    /// `SR.set_name`.
    SrSetName { sr: SrHandle, new_name: String }
    /// `SR.set_description`.
    SrSetDescription { sr: SrHandle, new_description: String }
    /// `Volume.create`.
    VolumeCreate { sr: SrHandle, name: String, description: String, size: VolumeSize, sharable: bool }
    /// `Volume.snapshot`.
    VolumeSnapshot { sr: SrHandle, key: VolumeKey }
    /// `Volume.clone`.
    VolumeClone { sr: SrHandle, key: VolumeKey }
    /// `Volume.destroy`.
    VolumeDestroy { sr: SrHandle, key: VolumeKey }
    /// `Volume.set_name`.
    VolumeSetName { sr: SrHandle, key: VolumeKey, new_name: String }
    /// `Volume.set_description`.
    VolumeSetDescription { sr: SrHandle, key: VolumeKey, new_description: String }
    /// `Volume.set`.
    VolumeSet { sr: SrHandle, key: VolumeKey, k: String, v: String }
    /// `Volume.unset`.
    VolumeUnset { sr: SrHandle, key: VolumeKey, k: String }
    /// `Volume.resize`.
    VolumeResize { sr: SrHandle, key: VolumeKey, new_size: VolumeSize }
    /// `Volume.stat`.
    VolumeStat { sr: SrHandle, key: VolumeKey }
    /// `Datapath.attach` (`domain` is not relied upon: it may be empty).
    DatapathAttach { uri: VolumeUri }
    /// `Datapath.activate`.
    DatapathActivate { uri: VolumeUri }
    /// `Datapath.deactivate`.
    DatapathDeactivate { uri: VolumeUri }
    /// `Datapath.detach`.
    DatapathDetach { uri: VolumeUri }
}

#[cfg(test)]
mod tests {
    use super::{Request, SrHandle, VolumeCreate, VolumeSize};
    use crate::error::to_error_record;
    use crate::smapi::method::Method;
    use crate::smapi::params::Params;

    const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

    fn params(method: &str, body: &str) -> Params {
        Params::from_json(Method::lookup(method).unwrap(), body).unwrap()
    }

    #[test]
    fn a_request_holds_parsed_values() {
        let body = format!(
            r#"{{"dbg":"d","sr":"nvmetcp://sr/{SR}","name":"n","description":"","size":"4096","sharable":false}}"#
        );
        let request = VolumeCreate::from_params(&params("Volume.create", &body)).unwrap();
        assert_eq!(request.sr.uuid().as_str(), SR);
        assert_eq!((request.size.bytes(), request.name.as_str(), request.sharable), (4096, "n", false));
    }

    #[test]
    fn a_request_that_does_not_parse_names_its_parameter() {
        let body = r#"{"dbg":"d","sr":"file:///etc","name":"n","description":"","size":1,"sharable":false}"#;
        let failure = VolumeCreate::from_params(&params("Volume.create", body)).unwrap_err();
        let record = to_error_record(&failure, "h1");
        assert_eq!((record.code.as_str(), record.params[2].as_str()), ("NVMETCP_INVALID_PARAMETER", "sr"));
        assert_eq!(record.backtrace.files, [file!()]);

        let body =
            format!(r#"{{"dbg":"d","sr":"nvmetcp://sr/{SR}","name":"n","description":"","size":0,"sharable":false}}"#);
        let failure = VolumeCreate::from_params(&params("Volume.create", &body)).unwrap_err();
        assert_eq!(to_error_record(&failure, "h1").code, "NVMETCP_VOLUME_INVALID");
    }

    #[test]
    fn handles_and_sizes_refuse_what_they_are_not() {
        for bad in ["", "nvmetcp://sr/", "nvmetcp://sr/3f1c", SR, "nvmetcp://sr/../../etc"] {
            assert!(SrHandle::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [0, -1, i64::MIN] {
            assert!(VolumeSize::new(bad).is_err(), "{bad}");
        }
        assert_eq!(VolumeSize::new(1).unwrap().bytes(), 1);
    }
}
