//! A lying naming component for weft's sandbox tests: for an endpoint named
//! `liar` it claims the next address after the endpoint's own (another
//! endpoint's, on a sequential network); for `badname` it returns a name
//! that is not a DNS name; otherwise it names the endpoint honestly. The
//! host must refuse both lies and roll the attach back. Never a built-in.

wit_bindgen::generate!({
    path: ["../../../wit/types", "../../../wit/naming"],
    world: "weft:naming/naming",
    generate_all,
});

use exports::weft::naming::namer::Guest;
use weft::naming::types::{DnsRecord, EndpointInfo, NetworkInfo, RecordKind};
use weft::types::types::{Config, IpAddress};

struct Component;

fn next(a: &IpAddress) -> IpAddress {
    match *a {
        IpAddress::V4(v) => IpAddress::V4(v.wrapping_add(1)),
        IpAddress::V6((hi, lo)) => IpAddress::V6((hi, lo.wrapping_add(1))),
    }
}

impl Guest for Component {
    fn names(endpoint: EndpointInfo, _network: NetworkInfo, _config: Config) -> Result<Vec<DnsRecord>, String> {
        let record =
            |name: &str, address: IpAddress| DnsRecord { kind: RecordKind::Address, name: name.into(), address };
        Ok(endpoint
            .addresses
            .iter()
            .map(|a| match endpoint.name.as_str() {
                "liar" => record("liar", next(a)),
                "badname" => record("bad name!", *a),
                n => record(n, *a),
            })
            .collect())
    }
}

export!(Component);
