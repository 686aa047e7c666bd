//! The benchmark's outputs: markdown tables and the attach-latency plot
//! (an SVG drawn here, so the benchmark needs nothing but itself).

use std::fmt::Write;
use std::time::Duration;

use crate::attach::{Resources, SYSTEMS, Series};
use crate::firewall::Throughput;
use crate::stats::{Summary, ms};

/// The attach tables: latencies, ratios, firewall objects, weftd's use.
pub fn attach_markdown(series: &[Series], res: &[Resources]) -> String {
    let mut s = String::new();
    s.push_str("| N | system | attach p50 ms | p95 | p99 | detach p50 ms | p95 | p99 | all N attached in s |\n");
    s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut cut_short = false;
    for x in series {
        cut_short |= x.partial();
        let (a, d) = (Summary::of(&x.setup), Summary::of(&x.teardown));
        let cell = |v: &[Duration], d: Duration| if v.is_empty() { "—".to_owned() } else { ms(d) };
        let detach = match (x.teardown.is_empty(), x.teardown_total.is_zero()) {
            (false, _) => ms(d.p50),
            (true, false) => format!("{} (wall / N)", ms(x.per_endpoint_teardown())),
            (true, true) => "—".to_owned(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.n,
            label(x),
            if x.setup.is_empty() { format!("{} (wall / N)", ms(x.per_endpoint())) } else { ms(a.p50) },
            cell(&x.setup, a.p95),
            cell(&x.setup, a.p99),
            detach,
            cell(&x.teardown, d.p95),
            cell(&x.teardown, d.p99),
            if x.partial() {
                format!("— ({} in {:.0})", x.done, x.setup_total.as_secs_f64())
            } else {
                format!("{:.2}", x.setup_total.as_secs_f64())
            }
        );
    }
    if cut_short {
        s.push_str(
            "\n\"first k of N\": the system's time budget per N ran out after k setups; its figures cover those k \
             only. Its per-call cost grows with the endpoints already set up, so they are lower bounds of its cost \
             at N (ratios marked ≥).\n",
        );
    }
    s.push_str("\nRatios of per-endpoint attach time (p50; bulk and batched: wall time / N), same run:\n\n");
    s.push_str(
        "| N | netavark / weft gRPC | CNI / weft gRPC | weft gRPC / floor (processes) | weft gRPC / floor (batched) | \
         weft CLI / floor (processes) | weft bulk / floor (batched) | weft CNI plugin / weft gRPC | \
         plugin − gRPC, ms |\n",
    );
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for n in sizes(series) {
        let get = per_endpoint(series, n, Phase::Attach);
        let (w, cli, bulk, nv, cni) =
            (get(SYSTEMS[0]), get(SYSTEMS[1]), get(SYSTEMS[2]), get(SYSTEMS[3]), get(SYSTEMS[4]));
        let (fl, plugin, batched) = (get(SYSTEMS[5]), get(SYSTEMS[6]), get(SYSTEMS[7]));
        let added = if plugin.0 > 0.0 { format!("{:.2}", (plugin.0 - w.0) * 1e3) } else { "—".into() };
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {added} |",
            ratio(nv, w),
            ratio(cni, w),
            ratio(w, fl),
            ratio(w, batched),
            ratio(cli, fl),
            ratio(bulk, batched),
            ratio(plugin, w)
        );
    }
    s.push_str(
        "\nRatios of per-endpoint detach time (p50; bulk and batched: wall time / N), same run, and how long \
         after the last detach returned weftd's retired links were all deleted:\n\n",
    );
    s.push_str(
        "| N | weft gRPC detach ms | weft bulk detach ms (wall / N) | rm --force ms (wall / N) | \
         netavark / weft gRPC | CNI / weft gRPC | weft gRPC / floor (processes) | weft gRPC / floor (batched) | \
         weft bulk / floor (batched) | links gone after the last detach, ms (sequential; bulk; rm --force) |\n",
    );
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for n in sizes(series) {
        let get = per_endpoint(series, n, Phase::Detach);
        let (w, bulk, nv, cni) = (get(SYSTEMS[0]), get(SYSTEMS[2]), get(SYSTEMS[3]), get(SYSTEMS[4]));
        let (fl, batched, rm) = (get(SYSTEMS[5]), get(SYSTEMS[7]), get(SYSTEMS[8]));
        let gone = res
            .iter()
            .find(|r| r.n == n)
            .map(|r| format!("{}; {}; {}", ms(r.retired_gone), ms(r.bulk_retired_gone), ms(r.rm_retired_gone)))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            s,
            "| {n} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {gone} |",
            w.0 * 1e3,
            bulk.0 * 1e3,
            rm.0 * 1e3,
            ratio(nv, w),
            ratio(cni, w),
            ratio(w, fl),
            ratio(w, batched),
            ratio(bulk, batched)
        );
    }
    s.push_str("\nFirewall objects in the host namespace with N endpoints attached (whole ruleset):\n\n");
    s.push_str("| N | system | nft rules | set/map elements |\n|---:|---|---:|---:|\n");
    for x in series {
        if let Some(c) = x.counts {
            let _ = writeln!(s, "| {} | {} | {} | {} |", x.n, label(x), c.rules, c.elements);
        }
    }
    s.push_str("\nweftd after N sequential attaches (one network, one published port each):\n\n");
    s.push_str(
        "| N | RSS MiB | CPU time for the N attaches (s) | CPU per attach (ms) | one metrics scrape (ms, p50) |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    for r in res {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.2} | {:.2} | {} |",
            r.n,
            r.rss_kib as f64 / 1024.0,
            r.cpu.as_secs_f64(),
            r.cpu.as_secs_f64() * 1e3 / r.n.max(1) as f64,
            ms(r.scrape)
        );
    }
    s.push_str("\nWhere one sequential gRPC attach and detach spend their time, inside weftd (mean per call, µs; weftd's own phase counters over the run):\n\n");
    let mut header = String::from("| phase |");
    let mut rule = String::from("|---|");
    for r in res {
        let _ = write!(header, " N = {} |", r.n);
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    let names: Vec<String> = res.first().map(|r| r.phases.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
    for name in names {
        let _ = write!(s, "| {name} |");
        for r in res {
            let cell = r
                .phases
                .iter()
                .find(|p| p.name == name && p.count > 0)
                .map(|p| format!(" {:.0} ({}×) |", p.total_us as f64 / r.n.max(1) as f64, p.count / r.n.max(1) as u64))
                .unwrap_or_else(|| " — |".into());
            s.push_str(&cell);
        }
        s.push('\n');
    }
    group_commit(&mut s, series, res);
    s
}

/// Sequential against 32-client attaches: each call's latency and what the
/// store cost per attach (concurrent attaches share transactions).
fn group_commit(s: &mut String, series: &[Series], res: &[Resources]) {
    s.push_str(
        "\nGroup commit: the store step of sequential and of 32 concurrent attaches (weftd's counters over the \
         attaches alone; an attach is answered only after the transaction holding its record is durable):\n\n\
         | N | attaches | attach p50 ms | p99 | store transactions per attach | one transaction µs (mean) | \
         transaction time per attach µs | an attach waits for its record µs (mean) |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in res {
        let rows =
            [(SYSTEMS[0], "sequential", &r.attach_phases, false), (SYSTEMS[2], "32 clients", &r.bulk_phases, true)];
        for (system, how, phases, bulk) in rows {
            let Some(x) = series.iter().find(|x| x.n == r.n && x.system == system) else { continue };
            let lat = Summary::of(if bulk { &x.calls } else { &x.setup });
            let phase = |name: &str| phases.iter().find(|p| p.name == name).map(|p| (p.count, p.total_us));
            let (txns, txn_us) = phase("store.txn").unwrap_or((0, 0));
            let (waits, wait_us) = phase("attach.store").unwrap_or((0, 0));
            let per = |v: u64, by: u64| if by == 0 { "—".to_owned() } else { format!("{:.0}", v as f64 / by as f64) };
            let _ = writeln!(
                s,
                "| {} | {how} | {} | {} | {:.2} | {} | {} | {} |",
                r.n,
                ms(lat.p50),
                ms(lat.p99),
                txns as f64 / r.n.max(1) as f64,
                per(txn_us, txns),
                per(txn_us, r.n as u64),
                per(wait_us, waits),
            );
        }
    }
}

/// The throughput table.
pub fn firewall_markdown(t: &[Throughput]) -> String {
    let mut s = String::from("| installed | nft rules | set/map elements | iperf3 Gbit/s (median) | runs |\n");
    s.push_str("|---|---:|---:|---:|---|\n");
    for x in t {
        let runs: Vec<String> = x.runs.iter().map(|r| format!("{r:.2}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {} |",
            x.scenario,
            x.counts.rules,
            x.counts.elements,
            x.gbits,
            runs.join(", ")
        );
    }
    s
}

/// Attach or detach.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Attach,
    Detach,
}

impl Phase {
    fn of(self, x: &Series) -> Duration {
        match self {
            Phase::Attach => x.per_endpoint(),
            Phase::Detach => x.per_endpoint_teardown(),
        }
    }
}

/// For one N: a system's per-endpoint seconds in `phase`, and whether it
/// is a lower bound (0 if the system did not run).
fn per_endpoint(series: &[Series], n: usize, phase: Phase) -> impl Fn(&str) -> (f64, bool) + '_ {
    move |sys: &str| {
        series
            .iter()
            .find(|x| x.n == n && x.system == sys)
            .map(|x| (phase.of(x).as_secs_f64(), x.partial()))
            .unwrap_or((0.0, false))
    }
}

/// `a / b` as a ratio cell; a lower bound over an exact figure is a lower
/// bound of the ratio.
fn ratio((a, lower): (f64, bool), (b, _): (f64, bool)) -> String {
    match (b > 0.0 && a > 0.0, lower) {
        (false, _) => "—".into(),
        (true, true) => format!("≥ {:.2}×", a / b),
        (true, false) => format!("{:.2}×", a / b),
    }
}

/// The system's name, with how far it got when its time budget ran out.
fn label(x: &Series) -> String {
    if x.partial() { format!("{} — first {} of {}", x.system, x.done, x.n) } else { x.system.to_owned() }
}

fn sizes(series: &[Series]) -> Vec<usize> {
    let mut v: Vec<usize> = series.iter().map(|x| x.n).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Attach or detach latency (per endpoint, ms, log scale) against N (log
/// scale), one line per system.
pub fn latency_svg(series: &[Series], phase: Phase) -> String {
    const W: f64 = 760.0;
    const H: f64 = 440.0;
    const L: f64 = 70.0;
    const R: f64 = 230.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 8] = ["#1f77b4", "#17becf", "#9467bd", "#d62728", "#ff7f0e", "#2ca02c", "#8c564b", "#7f7f7f"];
    let ns = sizes(series);
    let vals: Vec<f64> = series.iter().map(|x| phase.of(x).as_secs_f64() * 1e3).filter(|v| *v > 0.0).collect();
    // No values (every series failed): an empty plot from 1 ms.
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3);
    let lo = if lo.is_finite() { lo } else { 1.0 };
    let hi = vals.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (ylo, yhi) = (lo.log10().floor(), hi.log10().ceil());
    let (xlo, xhi) = (
        (*ns.first().unwrap_or(&1) as f64).log10(),
        (*ns.last().unwrap_or(&10) as f64).log10().max(ns.first().map_or(1.0, |n| (*n as f64).log10() + 1.0)),
    );
    let x = |n: usize| L + ((n as f64).log10() - xlo) / (xhi - xlo).max(1e-9) * (W - L - R);
    let y = |v: f64| T + (yhi - v.log10()) / (yhi - ylo).max(1e-9) * (H - T - B);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{} latency per endpoint (p50; bulk, batched: wall / N), one published port each</text>\n",
        W / 2.0,
        if phase == Phase::Attach { "Attach" } else { "Detach" }
    );
    let mut e = ylo as i32;
    while e as f64 <= yhi {
        let v = 10f64.powi(e);
        let yy = y(v);
        let label = if v >= 1.0 { format!("{v:.0} ms") } else { format!("{v} ms") };
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            W - R,
            L - 6.0,
            yy + 4.0
        );
        e += 1;
    }
    for &n in &ns {
        let xx = x(n);
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{T}\" x2=\"{xx:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\">N = {n}</text>",
            H - B,
            H - B + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>",
        W - L - R,
        H - T - B
    );
    for (k, sys) in SYSTEMS.iter().enumerate() {
        // Its attaches are the bulk attach again: only its teardown is its own.
        if phase == Phase::Attach && *sys == SYSTEMS[8] {
            continue;
        }
        let pts: Vec<(f64, f64, bool)> = ns
            .iter()
            .filter_map(|&n| series.iter().find(|x| x.n == n && x.system == *sys))
            .map(|x| (x.n, phase.of(x).as_secs_f64() * 1e3, x.partial()))
            .filter(|(_, v, _)| *v > 0.0)
            .map(|(n, v, p)| (x(n), y(v), p))
            .collect();
        let path: Vec<String> = pts.iter().map(|(a, b, _)| format!("{a:.1},{b:.1}")).collect();
        let c = COLORS[k % COLORS.len()];
        let _ =
            writeln!(s, "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>", path.join(" "));
        for (a, b, partial) in &pts {
            // Hollow: a lower bound (the time budget ran out before N).
            let fill = if *partial { "white" } else { c };
            let _ = writeln!(
                s,
                "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{c}\" stroke-width=\"1.5\"/>"
            );
        }
        let ly = T + 10.0 + k as f64 * 20.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{sys}</text>",
            W - R + 15.0,
            W - R + 40.0,
            W - R + 46.0,
            ly + 4.0
        );
    }
    if series.iter().any(Series::partial) {
        let ly = T + 10.0 + SYSTEMS.len() as f64 * 20.0 + 10.0;
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{ly}\" font-size=\"11\">hollow: first k of N only</text>\
<text x=\"{x}\" y=\"{}\" font-size=\"11\">(time budget): a lower bound</text>",
            ly + 14.0,
            x = W - R + 15.0,
        );
    }
    s.push_str("</svg>\n");
    s
}
