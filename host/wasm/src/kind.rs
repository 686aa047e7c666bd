//! The three decision worlds a component can implement, and the checks an
//! untrusted binary must pass before weft links it: a component (not a core
//! module), importing only what its world grants (never WASI), exporting its
//! world's interface at a version this host speaks.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;

/// The versions of the `weft:*` WIT packages this host speaks, newest
/// first: `weft:types`, `weft:ipam` and `weft:naming` are at 0.1;
/// `weft:policy` is at 0.2 (named ports) and 0.1 components still load. A
/// component built against any 0.N.x of a version listed is compatible
/// (semver: same 0.minor).
const V01: &[&str] = &["0.1.0"];
const POLICY: &[&str] = &["0.2.0", "0.1.0"];

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

    /// The world at the newest version this host speaks, as
    /// `weft:ipam@0.1.0`.
    pub fn world(self) -> String {
        format!("weft:{}@{}", self.as_str(), self.versions()[0])
    }

    /// The versions of the kind's world this host speaks, newest first.
    fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Policy => POLICY,
            Kind::Ipam | Kind::Naming => V01,
        }
    }

    /// The versions, for messages: `0.2.x or 0.1.x`.
    fn versions_shown(self) -> String {
        let shown: Vec<String> =
            self.versions().iter().map(|v| format!("{}.x", v.rsplit_once('.').map_or(*v, |(mm, _)| mm))).collect();
        shown.join(" or ")
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
    /// interfaces included), with their versions.
    fn grants(self) -> [(&'static str, &'static [&'static str]); 2] {
        match self {
            Kind::Ipam => [("weft:types/types", V01), ("weft:ipam/leases", V01)],
            Kind::Policy => [("weft:types/types", V01), ("weft:policy/types", POLICY)],
            Kind::Naming => [("weft:types/types", V01), ("weft:naming/types", V01)],
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

/// `interface@version` split: `None` if it is not `want`, else whether
/// `version` is compatible with one of `ours`.
fn compatible(name: &str, want: &str, ours: &[&str]) -> Option<bool> {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    (iface == want).then(|| {
        let theirs: Vec<&str> = version.split('.').collect();
        ours.iter().any(|v| {
            let ours: Vec<&str> = v.split('.').collect();
            theirs.len() == 3 && theirs[0] == ours[0] && theirs[1] == ours[1]
        })
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
    let newest = kind.versions()[0];
    match exports.iter().find_map(|e| compatible(e, kind.export(), kind.versions()).map(|ok| (e, ok))) {
        Some((_, true)) => {}
        Some((e, false)) => {
            return Err(format!(
                "exports {e}, but this weftd speaks {}@{newest} ({})",
                kind.export(),
                kind.versions_shown()
            ));
        }
        None => {
            return Err(format!(
                "does not export {}@{newest}, so it is not a {} component (it exports: {})",
                kind.export(),
                kind.world(),
                if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
            ));
        }
    };
    for name in &imports {
        if !kind.grants().iter().any(|(g, versions)| compatible(name, g, versions) == Some(true)) {
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
        assert_eq!(compatible("weft:ipam/allocator@0.1.0", "weft:ipam/allocator", V01), Some(true));
        assert_eq!(compatible("weft:ipam/allocator@0.1.7", "weft:ipam/allocator", V01), Some(true));
        assert_eq!(compatible("weft:ipam/allocator@0.2.0", "weft:ipam/allocator", V01), Some(false));
        assert_eq!(compatible("weft:ipam/allocatorx@0.1.0", "weft:ipam/allocator", V01), None);
        assert_eq!(compatible("weft:policy/engine@0.1.2", "weft:policy/engine", POLICY), Some(true));
        assert_eq!(compatible("weft:policy/engine@0.2.0", "weft:policy/engine", POLICY), Some(true));
        assert_eq!(compatible("weft:policy/engine@0.3.0", "weft:policy/engine", POLICY), Some(false));
        assert_eq!(Kind::Policy.world(), "weft:policy@0.2.0");
        assert_eq!(Kind::Policy.versions_shown(), "0.2.x or 0.1.x");
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(check_header(b"\0asm\x01\0\0\0").unwrap_err().contains("core WebAssembly module"));
        assert!(check_header(b"hello world").unwrap_err().contains("not a WebAssembly binary"));
        assert_eq!(Kind::of_builtin("policy-k8s"), Some(Kind::Policy));
        assert_eq!(Kind::parse("naming"), Some(Kind::Naming));
        assert_eq!(Kind::parse("dns"), None);
    }
}
