//! weft's default naming component, Docker's user-defined-network names:
//! the endpoint's name and each alias resolve to its addresses, both bare
//! (`web`) and qualified by the network (`web.frontend`); each address
//! resolves back (PTR) to `<name>.<network>`. Names are lower-cased.

wit_bindgen::generate!({
    path: ["../../wit/types", "../../wit/naming"],
    world: "weft:naming/naming",
    generate_all,
});

use exports::weft::naming::namer::Guest;
use weft::naming::types::{DnsRecord, EndpointInfo, NetworkInfo, RecordKind};
use weft::types::types::Config;

struct Component;

impl Guest for Component {
    fn names(endpoint: EndpointInfo, network: NetworkInfo, _config: Config) -> Result<Vec<DnsRecord>, String> {
        let net = network.name.to_ascii_lowercase();
        let mut names: Vec<String> = Vec::new();
        for n in std::iter::once(&endpoint.name).chain(endpoint.aliases.iter()) {
            let n = n.to_ascii_lowercase();
            for full in [n.clone(), format!("{n}.{net}")] {
                if !names.contains(&full) {
                    names.push(full);
                }
            }
        }
        let mut out = Vec::new();
        for name in &names {
            for a in &endpoint.addresses {
                out.push(DnsRecord { kind: RecordKind::Address, name: name.clone(), address: *a });
            }
        }
        let canonical = format!("{}.{net}", endpoint.name.to_ascii_lowercase());
        for a in &endpoint.addresses {
            out.push(DnsRecord { kind: RecordKind::Pointer, name: canonical.clone(), address: *a });
        }
        Ok(out)
    }
}

export!(Component);
