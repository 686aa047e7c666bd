//! An IPAM component built for wasm32-wasip2 that reads an environment
//! variable, so it imports WASI (`wasi:cli/environment`). weft must refuse
//! it at load, naming the import. Never loaded as a built-in.

wit_bindgen::generate!({
    path: ["../../../wit/types", "../../../wit/ipam"],
    world: "weft:ipam/ipam",
    generate_all,
});

use exports::weft::ipam::allocator::{Guest, IpamError, Pool, Request};
use weft::types::types::{Config, IpAddress};

struct Component;

impl Guest for Component {
    fn allocate(_pool: Pool, _request: Request, _config: Config) -> Result<IpAddress, IpamError> {
        Err(IpamError::Invalid(std::env::var("HOME").unwrap_or_default()))
    }
}

export!(Component);
