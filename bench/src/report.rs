//! Output: one `key=value` line per result as it comes, then a markdown table of every figure
//! with its ratio to raw TCP and to tonic, then the project's targets, met or missed.

use std::fmt::Write as _;

use crate::harness::{StreamResult, UnaryResult};
use crate::targets::Impl;

/// One measured figure set.
#[derive(Debug, Clone)]
pub(crate) enum Figures {
    Unary(UnaryResult),
    Stream(StreamResult),
}

/// One result line.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) imp: Impl,
    pub(crate) shape: &'static str,
    pub(crate) size: usize,
    pub(crate) conc: usize,
    /// For streams: the bytes sent per run.
    pub(crate) total: u64,
    pub(crate) figures: Figures,
}

impl Row {
    /// The `key=value` line.
    pub(crate) fn line(&self) -> String {
        let mut s = format!(
            "impl={} shape={} size={} conc={}",
            self.imp.name(),
            self.shape,
            self.size,
            self.conc
        );
        match &self.figures {
            Figures::Unary(u) => {
                let _ = write!(
                    s,
                    " calls={} p50_us={:.1} p99_us={:.1} rps={:.0}",
                    u.calls, u.p50_us, u.p99_us, u.rps
                );
                if let Some(a) = u.allocs_per_call {
                    let _ = write!(s, " allocs_per_call={a:.2}");
                }
            }
            Figures::Stream(st) => {
                let _ = write!(
                    s,
                    " total_mib={} runs={} MBps={:.0} best_MBps={:.0}",
                    self.total >> 20,
                    st.runs,
                    st.mbps,
                    st.best_mbps
                );
            }
        }
        s
    }

    fn metric(&self, name: &str) -> Option<f64> {
        match (&self.figures, name) {
            (Figures::Unary(u), "p50_us") => Some(u.p50_us),
            (Figures::Unary(u), "p99_us") => Some(u.p99_us),
            (Figures::Unary(u), "rps") => Some(u.rps),
            (Figures::Unary(u), "allocs_per_call") => u.allocs_per_call,
            (Figures::Stream(s), "MBps") => Some(s.mbps),
            _ => None,
        }
    }
}

/// The figures reported per (shape, size, conc) and how to read their ratios.
const METRICS: [(&str, &str); 5] = [
    ("p50_us", "lower is better"),
    ("p99_us", "lower is better"),
    ("rps", "higher is better"),
    ("allocs_per_call", "lower is better"),
    ("MBps", "higher is better"),
];

fn find<'a>(rows: &'a [Row], imp: Impl, shape: &str, size: usize, conc: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.imp == imp && r.shape == shape && r.size == size && r.conc == conc)
}

fn fmt_value(metric: &str, v: f64) -> String {
    match metric {
        "p50_us" | "p99_us" => format!("{v:.1}"),
        "allocs_per_call" => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

fn ratio(metric: &str, a: Option<f64>, b: Option<f64>) -> String {
    // A reference that allocates less than once per call (raw TCP: 0, or a stray allocation
    // in the whole run) makes an allocation ratio meaningless.
    let floor = if metric == "allocs_per_call" {
        0.5
    } else {
        0.0
    };
    match (a, b) {
        (Some(a), Some(b)) if b > floor => format!("{:.2}x", a / b),
        _ => "—".into(),
    }
}

/// The markdown table: one row per figure, one column per implementation, then the ratios of
/// every implementation to raw TCP and of the drpc ones to tonic.
pub(crate) fn table(rows: &[Row]) -> String {
    let imps: Vec<Impl> = Impl::ALL
        .into_iter()
        .filter(|i| rows.iter().any(|r| r.imp == *i))
        .collect();
    let vs_raw: Vec<Impl> = imps.iter().copied().filter(|i| *i != Impl::Raw).collect();
    let vs_tonic: Vec<Impl> = if imps.contains(&Impl::Tonic) {
        imps.iter()
            .copied()
            .filter(|i| !matches!(i, Impl::Raw | Impl::Tonic))
            .collect()
    } else {
        Vec::new()
    };
    let mut out = String::new();
    let mut header = String::from("| shape | size | conc | metric |");
    let mut rule = String::from("|---|---:|---:|---|");
    for i in &imps {
        let _ = write!(header, " {} |", i.name());
        rule.push_str("---:|");
    }
    for i in &vs_raw {
        let _ = write!(header, " {} / raw |", i.name());
        rule.push_str("---:|");
    }
    for i in &vs_tonic {
        let _ = write!(header, " {} / tonic |", i.name());
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let mut keys: Vec<(&str, usize, usize)> = Vec::new();
    for r in rows {
        let k = (r.shape, r.size, r.conc);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (shape, size, conc) in keys {
        for (metric, _) in METRICS {
            let values: Vec<Option<f64>> = imps
                .iter()
                .map(|i| find(rows, *i, shape, size, conc).and_then(|r| r.metric(metric)))
                .collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            let value_of = |imp: Impl| imps.iter().position(|i| *i == imp).and_then(|p| values[p]);
            let size_label = if size >= 1024 && size % 1024 == 0 {
                format!("{} KiB", size / 1024)
            } else {
                format!("{size} B")
            };
            let mut line = format!("| {shape} | {size_label} | {conc} | {metric} |");
            for v in &values {
                let cell = v
                    .map(|v| fmt_value(metric, v))
                    .unwrap_or_else(|| "—".into());
                let _ = write!(line, " {cell} |");
            }
            for i in &vs_raw {
                let _ = write!(
                    line,
                    " {} |",
                    ratio(metric, value_of(*i), value_of(Impl::Raw))
                );
            }
            for i in &vs_tonic {
                let _ = write!(
                    line,
                    " {} |",
                    ratio(metric, value_of(*i), value_of(Impl::Tonic))
                );
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out.push_str(
        "\nRatios are implementation ÷ reference: below 1 is better for p50_us, p99_us and \
         allocs_per_call, above 1 is better for rps and MBps.\n",
    );
    out
}

/// The project's targets for drpc-tcp, each with the measured figure and met / missed.
pub(crate) fn targets(rows: &[Row]) -> String {
    let mut out = String::new();
    let get = |imp, shape, size, conc, metric: &str| {
        find(rows, imp, shape, size, conc).and_then(|r| r.metric(metric))
    };
    let mut check = |name: &str, value: Option<f64>, goal: &str, ok: fn(f64) -> bool| {
        if let Some(v) = value {
            let verdict = if ok(v) { "met" } else { "missed" };
            let _ = writeln!(
                out,
                "target={name} measured={v:.2} goal={goal} result={verdict}"
            );
        }
    };
    let d = Impl::DrpcTcp;
    let ratio_of = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    check(
        "unary_64B_conc1_p50_vs_raw",
        ratio_of(
            get(d, "unary", 64, 1, "p50_us"),
            get(Impl::Raw, "unary", 64, 1, "p50_us"),
        ),
        "<=1.3x",
        |v| v <= 1.3,
    );
    check(
        "unary_64B_conc64_rps_vs_raw",
        ratio_of(
            get(d, "unary", 64, 64, "rps"),
            get(Impl::Raw, "unary", 64, 64, "rps"),
        ),
        ">=0.8x",
        |v| v >= 0.8,
    );
    let stream_size = rows
        .iter()
        .find(|r| r.shape == "stream")
        .map(|r| r.size)
        .unwrap_or(0);
    check(
        "stream_MBps_vs_raw",
        ratio_of(
            get(d, "stream", stream_size, 1, "MBps"),
            get(Impl::Raw, "stream", stream_size, 1, "MBps"),
        ),
        ">=0.9x",
        |v| v >= 0.9,
    );
    for size in [64, 4096] {
        check(
            &format!("unary_{size}B_conc1_allocs_per_call"),
            get(d, "unary", size, 1, "allocs_per_call"),
            "<=10",
            |v| v <= 10.0,
        );
    }
    // The migration layers' cost on unary p50 (issue 18's goal: at most 10 % over drpc-tcp).
    // `shadow` is `ShadowConn`; `shadow_layer` the same through the tower stack.
    for (imp, name) in [
        (Impl::DrpcRecord, "record"),
        (Impl::DrpcShadow, "shadow"),
        (Impl::DrpcShadowLayer, "shadow_layer"),
    ] {
        for size in [64, 4096] {
            check(
                &format!("{name}_unary_{size}B_conc1_p50_vs_drpc_tcp"),
                ratio_of(
                    get(imp, "unary", size, 1, "p50_us"),
                    get(d, "unary", size, 1, "p50_us"),
                ),
                "<=1.1x",
                |v| v <= 1.1,
            );
        }
    }
    // Each drpc transport against the raw protocol over the same transport (informational):
    // what drpc adds, apart from what the transport itself costs.
    for (drpc, raw, name) in [
        (Impl::DrpcTls, Impl::RawTls, "tls"),
        (Impl::DrpcYamux, Impl::RawYamux, "yamux"),
        (Impl::DrpcQuic, Impl::RawQuic, "quic"),
    ] {
        let mut line = String::new();
        for (shape, size, conc, metric) in [
            ("unary", 64, 1, "p50_us"),
            ("unary", 64, 64, "rps"),
            ("stream", stream_size, 1, "MBps"),
        ] {
            let (Some(v), Some(t)) = (
                ratio_of(
                    get(drpc, shape, size, conc, metric),
                    get(raw, shape, size, conc, metric),
                ),
                ratio_of(
                    get(raw, shape, size, conc, metric),
                    get(Impl::Raw, shape, size, conc, metric),
                ),
            ) else {
                continue;
            };
            let _ = write!(
                line,
                " {shape}_{size}B_conc{conc}_{metric}={v:.2}(raw-{name}/raw={t:.2})"
            );
        }
        if !line.is_empty() {
            let _ = writeln!(out, "vs_transport={name}{line}");
        }
    }
    // How far ahead of tonic (informational: no goal).
    let mut ahead = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            let _ = writeln!(out, "vs_tonic={name} drpc-tcp/tonic={v:.2}");
        }
    };
    for (size, conc, metric) in [
        (64, 1, "p50_us"),
        (4096, 1, "p50_us"),
        (64, 64, "rps"),
        (4096, 64, "rps"),
        (64, 1, "allocs_per_call"),
    ] {
        ahead(
            &format!("unary_{size}B_conc{conc}_{metric}"),
            ratio_of(
                get(d, "unary", size, conc, metric),
                get(Impl::Tonic, "unary", size, conc, metric),
            ),
        );
    }
    ahead(
        "stream_MBps",
        ratio_of(
            get(d, "stream", stream_size, 1, "MBps"),
            get(Impl::Tonic, "stream", stream_size, 1, "MBps"),
        ),
    );
    out
}
