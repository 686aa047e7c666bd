//! The policy compiler's normalisation: what the layers cover is exactly
//! what the rules allow, and no layer holds two overlapping elements (which
//! nf_tables would refuse).

use super::*;

/// A tiny deterministic generator (xorshift), enough for case generation.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn overlaps(a: &Cell, b: &Cell) -> bool {
    a.proto == b.proto && a.lo <= b.hi && b.lo <= a.hi && a.plo <= b.phi && b.plo <= a.phi
}

fn covers(cells: &[Cell], proto: u8, a: u128, p: u16) -> bool {
    cells.iter().any(|c| c.proto == proto && (c.lo..=c.hi).contains(&a) && (c.plo..=c.phi).contains(&p))
}

#[test]
fn layers_cover_what_the_cells_cover_and_never_overlap() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..300 {
        let ports = case % 3 != 0;
        let shape = if ports { Shape::Ports } else { Shape::Proto };
        let cells: Vec<Cell> = (0..1 + rng.below(30))
            .map(|_| {
                let lo = rng.below(64) as u128;
                let hi = lo + rng.below(16) as u128;
                let (plo, phi) = if ports {
                    let plo = 1 + rng.below(40) as u16;
                    (plo, plo + rng.below(10) as u16)
                } else {
                    (0, 0)
                };
                Cell { proto: [6, 17][rng.below(2) as usize], lo, hi, plo, phi }
            })
            .collect();
        let layers = layers(shape, cells.clone());
        if !ports {
            assert!(layers.len() <= 1, "case {case}: one dimension needs one layer");
        }
        for layer in &layers {
            for (i, a) in layer.iter().enumerate() {
                for b in &layer[i + 1..] {
                    assert!(!overlaps(a, b), "case {case}: {a:?} and {b:?} share a layer");
                }
            }
        }
        let flat: Vec<Cell> = layers.concat();
        for proto in [6, 17] {
            for a in 0..82u128 {
                for p in 0..52u16 {
                    assert_eq!(
                        covers(&cells, proto, a, p),
                        covers(&flat, proto, a, p),
                        "case {case}: proto {proto} address {a} port {p}"
                    );
                }
            }
        }
    }
}

#[test]
fn many_disjoint_rules_fit_one_layer() {
    // 1,000 /32s on one port, and 1,000 ports from anywhere: one layer each.
    let one_port: Vec<Cell> =
        (0..1000u128).map(|i| Cell { proto: 6, lo: i * 4, hi: i * 4, plo: 80, phi: 80 }).collect();
    assert_eq!(layers(Shape::Ports, one_port).len(), 1);
    let anywhere: Vec<Cell> =
        (0..1000u16).map(|i| Cell { proto: 6, lo: 0, hi: u32::MAX.into(), plo: 9000 + i, phi: 9000 + i }).collect();
    let l = layers(Shape::Ports, anywhere);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].len(), 1, "adjacent ports merge into one range: {:?}", l[0].first());
}

#[test]
fn exceptions_are_cut_out_of_a_prefix() {
    let net = weft_model::network::Network::new(
        "n".repeat(32),
        weft_model::network::CreateNetwork {
            name: "n".into(),
            subnets: vec![weft_model::network::SubnetRequest { subnet: "10.89.0.0/24".into(), ..Default::default() }],
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
    .unwrap();
    let n = |s: &str| num(s.parse().unwrap());
    let cidr = |p: &str, ex: &[&str]| Peer::Cidr {
        prefix: p.parse().unwrap(),
        except: ex.iter().map(|e| e.parse().unwrap()).collect(),
    };
    assert_eq!(
        peer_ranges(&net, &cidr("10.0.0.0/8", &["10.1.0.0/16", "10.255.255.0/24"]), 4),
        Some(vec![(n("10.0.0.0"), n("10.0.255.255")), (n("10.2.0.0"), n("10.255.254.255"))])
    );
    assert_eq!(peer_ranges(&net, &cidr("10.0.0.0/8", &["10.0.0.0/8"]), 4), Some(vec![]));
    assert_eq!(peer_ranges(&net, &cidr("10.0.0.0/8", &[]), 6), Some(vec![]));
    assert_eq!(peer_ranges(&net, &Peer::Network, 4), Some(vec![(n("10.89.0.0"), n("10.89.0.255"))]));
    assert_eq!(peer_ranges(&net, &Peer::Group("web".into()), 4), None);
}
