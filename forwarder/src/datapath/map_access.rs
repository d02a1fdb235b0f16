//! Finding a map of the loaded object by name, with one error for all the readers (flows,
//! stats): the map missing from the object, or aya refusing its type or an access.

use aya::{maps::Map, Ebpf};

#[derive(Debug, thiserror::Error)]
pub enum MapReadError {
    #[error("map {0} is missing from the object")]
    Missing(&'static str),
    #[error("map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("counting the CPUs for map {0}: {1}")]
    Cpus(&'static str, #[source] std::io::Error),
}

pub fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Map, MapReadError> {
    ebpf.map(name).ok_or(MapReadError::Missing(name))
}

pub fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, MapReadError> {
    ebpf.map_mut(name).ok_or(MapReadError::Missing(name))
}

/// `aya::maps::MapError` of map `name` as a [`MapReadError`].
pub fn of(name: &'static str) -> impl Fn(aya::maps::MapError) -> MapReadError {
    move |e| MapReadError::Map(name, e)
}
