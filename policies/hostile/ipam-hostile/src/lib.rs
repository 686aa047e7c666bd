//! A hostile IPAM component for weft's sandbox tests. What it does depends on
//! the endpoint name it is asked about: `spin` loops forever, `grow` grows
//! memory without end, `recurse` recurses without end, `trap` hits
//! `unreachable`, `huge` answers with a 64 MiB error string, `outside`
//! answers an address outside every subnet; anything else answers the first
//! address of the pool. Never loaded as a built-in.

wit_bindgen::generate!({
    path: ["../../../wit/types", "../../../wit/ipam"],
    world: "weft:ipam/ipam",
    generate_all,
});

use exports::weft::ipam::allocator::{Guest, IpamError, Pool, Request};
use weft::types::types::{Config, IpAddress};

struct Component;

#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(n: u64) -> u64 {
    // Keep a frame alive on every level so it cannot become a loop.
    let frame = [n; 64];
    recurse(std::hint::black_box(frame[(n % 64) as usize]) + 1) + frame[0]
}

impl Guest for Component {
    fn allocate(pool: Pool, request: Request, _config: Config) -> Result<IpAddress, IpamError> {
        match request.endpoint.as_str() {
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Err(IpamError::Invalid(recurse(0).to_string())),
            "trap" => std::process::abort(),
            "huge" => Err(IpamError::Invalid("x".repeat(64 << 20))),
            "outside" => Ok(IpAddress::V4(0x0808_0808)),
            _ => match pool.subnet.address {
                IpAddress::V4(a) => Ok(IpAddress::V4(a + 2)),
                IpAddress::V6((hi, lo)) => Ok(IpAddress::V6((hi, lo + 2))),
            },
        }
    }
}

export!(Component);
