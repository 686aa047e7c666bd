//! Scraping weftd's Prometheus metrics in tests: GET /metrics from the
//! host namespace and a minimal parser of the text format.

use std::collections::BTreeMap;

use crate::{Host, http_get_path};

/// Where test weftds serve metrics (loopback of their own host namespace).
pub const ADDR: &str = "127.0.0.1:9464";

/// The samples of one scrape: `name{labels}` (labels as written) to value.
pub struct Scrape(pub BTreeMap<String, f64>);

impl Scrape {
    /// Scrape `host`'s weftd (started with `--metrics-listen` [`ADDR`]).
    pub fn of(host: &Host) -> Scrape {
        let response = http_get_path(&host.ns.name, ADDR, "/metrics").unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        Scrape::parse(body)
    }

    /// Parse the text format; panics on a line that is not a sample.
    pub fn parse(body: &str) -> Scrape {
        let mut v = BTreeMap::new();
        for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line}"));
            v.insert(key.to_owned(), value);
        }
        Scrape(v)
    }

    /// The value of `key` (`name` or `name{a="x",b="y"}`), 0 if absent.
    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}
