//! The three decision worlds a component can implement, and the checks an
//! untrusted binary must pass before weft links it: a component (not a core
//! module), importing only what its world grants (never WASI), exporting its
//! world's interface at a version this host speaks.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;

/// The version of the `weft:*` WIT packages this host speaks. A component
/// built against any 0.1.x is compatible (semver: same 0.minor).
const WIT_VERSION: &str = "0.1.0";

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `weft:ipam`: address management.
    Ipam,
    /// `weft:policy`: network policy.
    Policy,
    /// `weft:naming`: DNS names.
    Naming,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Ipam, Kind::Policy, Kind::Naming];

    /// Parse `ipam`, `policy` or `naming`.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ipam => "ipam",
            Kind::Policy => "policy",
            Kind::Naming => "naming",
        }
    }

    /// The kind of a built-in, from its name's prefix (`ipam-default`).
    pub fn of_builtin(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| name.starts_with(&format!("{}-", k.as_str())))
    }

    /// The world, as `weft:ipam@0.1.0`.
    pub fn world(self) -> String {
        format!("weft:{}@{WIT_VERSION}", self.as_str())
    }

    /// The interface a component of this kind must export.
    fn export(self) -> &'static str {
        match self {
            Kind::Ipam => "weft:ipam/allocator",
            Kind::Policy => "weft:policy/engine",
            Kind::Naming => "weft:naming/namer",
        }
    }

    /// The interfaces the world lets a component import (type-only
    /// interfaces included).
    fn grants(self) -> &'static [&'static str] {
        match self {
            Kind::Ipam => &["weft:types/types", "weft:ipam/leases"],
            Kind::Policy => &["weft:types/types", "weft:policy/types"],
            Kind::Naming => &["weft:types/types", "weft:naming/types"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a loaded component imports and exports (for `weft module inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Import names.
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
}

/// Check the binary's header: a component, not a core module or junk.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("is not a WebAssembly binary (no \\0asm header)".into());
    }
    match &bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err("is a core WebAssembly module, not a component: make one with `wasm-tools component new`, \
             or build with cargo-component / wasm32-wasip2, componentize-py or jco"
            .into()),
        other => Err(format!("has an unknown WebAssembly layer {other:?}")),
    }
}

/// `interface@version` split, and whether `version` is compatible with ours.
fn compatible(name: &str, want: &str) -> Option<bool> {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    (iface == want).then(|| {
        let ours: Vec<&str> = WIT_VERSION.split('.').collect();
        let theirs: Vec<&str> = version.split('.').collect();
        theirs.len() == 3 && theirs[0] == ours[0] && theirs[1] == ours[1]
    })
}

/// Check a compiled component against `kind`'s world: every import granted
/// (naming the first that is not; WASI never is), the world's interface
/// exported at a compatible version. Returns its imports and exports.
pub fn check_world(engine: &Engine, component: &Component, kind: Kind) -> Result<ComponentInfo, String> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    // The export first: a component of another world is named as such.
    match exports.iter().find_map(|e| compatible(e, kind.export()).map(|ok| (e, ok))) {
        Some((_, true)) => {}
        Some((e, false)) => {
            return Err(format!("exports {e}, but this weftd speaks {}@{WIT_VERSION} (0.1.x)", kind.export()));
        }
        None => {
            return Err(format!(
                "does not export {}@{WIT_VERSION}, so it is not a {} component (it exports: {})",
                kind.export(),
                kind.world(),
                if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
            ));
        }
    };
    for name in &imports {
        if !kind.grants().iter().any(|g| compatible(name, g) == Some(true)) {
            let hint = if name.starts_with("wasi:") {
                " (weft grants no WASI: no files, sockets, clocks, randomness or environment)"
            } else {
                ""
            };
            return Err(format!("imports {name}, which the {} world does not grant{hint}", kind.world()));
        }
    }
    Ok(ComponentInfo { imports, exports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_headers() {
        assert_eq!(compatible("weft:ipam/allocator@0.1.0", "weft:ipam/allocator"), Some(true));
        assert_eq!(compatible("weft:ipam/allocator@0.1.7", "weft:ipam/allocator"), Some(true));
        assert_eq!(compatible("weft:ipam/allocator@0.2.0", "weft:ipam/allocator"), Some(false));
        assert_eq!(compatible("weft:ipam/allocatorx@0.1.0", "weft:ipam/allocator"), None);
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(check_header(b"\0asm\x01\0\0\0").unwrap_err().contains("core WebAssembly module"));
        assert!(check_header(b"hello world").unwrap_err().contains("not a WebAssembly binary"));
        assert_eq!(Kind::of_builtin("policy-k8s"), Some(Kind::Policy));
        assert_eq!(Kind::parse("naming"), Some(Kind::Naming));
        assert_eq!(Kind::parse("dns"), None);
    }
}
