//! The balancing fleet simulation: measures the goals of the design note (G1–G9, G11, G12)
//! in one process and prints one line per figure, key=value only:
//!
//! ```text
//! metric=G1 scheme=ring scenario=M300_N300_k10 min=1.00 best_possible=1.0000 value=1.0000 target=1.1000 pass=true
//! ```
//!
//! G1–G6 are computed (subsets, routing tables, request streams: no sockets); G7–G9, G11
//! and G12 run real balanced connections against echo servers on 127.0.0.1.
//!
//! `cargo run --release -p drpc-pool --example balance-sim [-- --quick]`: `--quick` (for CI)
//! runs a smaller grid and skips the slow real-time rows; `--only PART` runs one part
//! (`subsetting`, `routing`, `hot_keys`, `g11` or `realtime`; or `sweep`, which the default
//! run leaves out: ring subsetting at every N near the grid's).
//!
//! ci-skip: .ci/run runs it in a step of its own (`--quick`), which checks its output lines.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use drpc_pool::balance::outlier::OutlierConfig;
use drpc_pool::balance::resolver::{
    PushResolver, PushServer, ResolvedEndpoint, manual, push_service,
};
use drpc_pool::balance::route::{LargeSet, RouteConfig, RouteMethod, RouteTable};
use drpc_pool::balance::subset::Subset;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState, hash_str};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const UNARY: &str = "/echo.Echo/Unary";

/// `echo.Msg`.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

type Tcp = TransportConn<TcpStream>;

/// Prints one figure.
fn line(metric: &str, fields: &[(&str, String)], value: f64, target: f64, pass: bool) {
    let mut s = format!("metric={metric}");
    for (k, v) in fields {
        s.push_str(&format!(" {k}={v}"));
    }
    println!("{s} value={value:.4} target={target:.4} pass={pass}");
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("web-{i}")).collect()
}

/// A client's subset under `scheme` (ring by ordinal, capped with the client count `m`, or
/// rendezvous by a seeded id).
fn subset(scheme: &str, seed: u64, client: u64, m: u64, k: usize) -> Subset {
    match scheme {
        "ring" => Subset::Ring {
            ordinal: client,
            clients: Some(m),
            k,
        },
        "ring_plain" => Subset::Ring {
            ordinal: client,
            clients: None,
            k,
        },
        _ => Subset::Rendezvous {
            client: format!("s{seed}-client-{client}"),
            k,
        },
    }
}

/// The expected largest of `n` independent Binomial(`m`, `p`) counts: what any subsetting
/// that is a function of a random client id alone gives in expectation (each backend's
/// count is then a sum of `m` independent choices).
fn expected_max_binomial(m: u64, p: f64, n: usize) -> f64 {
    if p >= 1.0 {
        return m as f64; // every client connects to every backend
    }
    // E[max] = Σ_t P(max > t) = Σ_t (1 − F(t)^n), F the binomial CDF.
    let (mut pmf, mut cdf, mut sum) = ((1.0 - p).powi(m as i32), 0.0f64, 0.0f64);
    for t in 0..=m {
        cdf = (cdf + pmf).min(1.0);
        sum += 1.0 - cdf.powi(n as i32);
        pmf *= (m - t) as f64 / (t + 1) as f64 * p / (1.0 - p);
    }
    sum
}

/// Connections per backend (by name) when clients `0..m` pick subsets of `backends`.
fn conns(scheme: &str, seed: u64, m: u64, backends: &[String], k: usize) -> Vec<HashSet<String>> {
    (0..m)
        .map(|c| {
            subset(scheme, seed, c, m, k)
                .select(backends)
                .into_iter()
                .map(|i| backends[i].clone())
                .collect()
        })
        .collect()
}

/// Connections per backend `web-i`, indexed by i, over every client's subset.
fn per_backend(sets: &[HashSet<String>], n: usize) -> Vec<usize> {
    let mut count = vec![0usize; n];
    for b in sets.iter().flatten() {
        count[b[4..].parse::<usize>().unwrap()] += 1;
    }
    count
}

/// The connections of `before` missing from `after`, client by client (the churn).
fn closed(before: &[HashSet<String>], after: &[HashSet<String>]) -> usize {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| b.difference(a).count())
        .sum()
}

/// G1: connection balance over the grid; G2: churn when a backend is added or removed; G3:
/// churn when a client joins.
fn subsetting(quick: bool) {
    let ms: &[u64] = if quick { &[300] } else { &[100, 300, 1000] };
    let ns: &[usize] = if quick { &[100] } else { &[10, 100, 300] };
    let ks: &[usize] = if quick { &[10] } else { &[5, 10, 20] };
    // Seeds for the churn rows, and (more: the mean must estimate an expectation) for G1.
    let seeds = if quick { 1 } else { 5 };
    let g1_seeds = if quick { 1 } else { 20 };
    for scheme in ["ring", "rendezvous"] {
        for &m in ms {
            for &n in ns {
                for &k in ks {
                    let backends = names(n);
                    let scenario = format!("M{m}_N{n}_k{k}");
                    let k_eff = k.min(n);
                    let mean = (m as f64) * k_eff as f64 / n as f64;
                    let (mut worst_max, mut worst_min) = (0.0f64, f64::MAX);
                    let runs = if scheme == "ring" { 1 } else { g1_seeds };
                    let (mut sum_max, mut sum_sq) = (0.0, 0.0);
                    for seed in 0..runs {
                        let count = per_backend(&conns(scheme, seed, m, &backends, k), n);
                        let max = *count.iter().max().unwrap() as f64 / mean;
                        let min = *count.iter().min().unwrap() as f64 / mean;
                        worst_max = worst_max.max(max);
                        sum_max += max;
                        sum_sq += max * max;
                        worst_min = worst_min.min(min);
                    }
                    let mean_of_seeds = sum_max / runs as f64;
                    // The standard error of that mean (0 for one run).
                    let var = (sum_sq / runs as f64 - mean_of_seeds * mean_of_seeds).max(0.0);
                    let stderr = (var / (runs as f64 - 1.0).max(1.0)).sqrt();
                    if scheme == "ring" {
                        // 1.10 where integer counts allow it, else the best any assignment
                        // can do: ⌈μ⌉/μ.
                        let floor = mean.ceil() / mean;
                        let target = floor.max(1.10);
                        line(
                            "G1",
                            &[
                                ("scheme", scheme.into()),
                                ("scenario", scenario),
                                ("min", format!("{worst_min:.2}")),
                                ("best_possible", format!("{floor:.4}")),
                            ],
                            worst_max,
                            target,
                            worst_max <= target + 1e-9,
                        );
                    } else {
                        // The bound is the expected maximum of N binomial counts (mean μ):
                        // an expectation, compared with the mean over seeds. The exact
                        // expectation for any scheme that is a function of a random client
                        // id alone is printed beside it, and flagged where it already exceeds
                        // the bound (the normal approximation is optimistic for small μ).
                        // The worst seed is printed on a line of its own (`G1_worst_seed`): a
                        // maximum over seeds, not an expectation; its `pass` only says whether
                        // it stays within the bound anyway.
                        let target = 1.0 + (2.0 * (n as f64).ln()).sqrt() / mean.sqrt();
                        let exact = expected_max_binomial(m, k_eff as f64 / n as f64, n) / mean;
                        let below = exact > target + 1e-9;
                        line(
                            "G1",
                            &[
                                ("scheme", scheme.into()),
                                ("scenario", scenario.clone()),
                                ("stat", format!("mean_of_{runs}_seeds")),
                                ("stderr", format!("{stderr:.4}")),
                                ("min", format!("{worst_min:.2}")),
                                ("expected_max_binomial", format!("{exact:.4}")),
                                ("bound_below_exact", below.to_string()),
                            ],
                            mean_of_seeds,
                            target,
                            mean_of_seeds <= target + 1e-9,
                        );
                        line(
                            "G1_worst_seed",
                            &[
                                ("scheme", scheme.into()),
                                ("scenario", scenario),
                                ("stat", format!("worst_of_{runs}_seeds")),
                                ("min", format!("{worst_min:.2}")),
                                ("expected_max_binomial", format!("{exact:.4}")),
                            ],
                            worst_max,
                            target,
                            worst_max <= target + 1e-9,
                        );
                    }
                }
            }
        }
        // What one client's subset costs to compute (the capped ring computes everyone's).
        if !quick {
            let backends = names(300);
            let (m, k) = (1000, 20);
            let mut samples: Vec<f64> = (0..15)
                .map(|i| {
                    let t = Instant::now();
                    std::hint::black_box(subset(scheme, 0, i * 61 % m, m, k).select(&backends));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            samples.sort_by(f64::total_cmp);
            let p50 = samples[samples.len() / 2];
            line(
                "subset_select_ms",
                &[
                    ("scheme", scheme.into()),
                    ("scenario", format!("M{m}_N300_k{k}")),
                ],
                p50,
                5.0,
                p50 <= 5.0,
            );
        }
        let churn_grid: &[(u64, usize, usize)] = if quick {
            &[(300, 100, 10)]
        } else {
            &[
                (300, 300, 10),
                (1000, 100, 10),
                (1000, 300, 20),
                (100, 10, 5),
            ]
        };
        for &(m, n, k) in churn_grid {
            let scenario = format!("M{m}_N{n}_k{k}");
            let seeds_here = if scheme == "ring" { 1 } else { seeds };
            let (mut add, mut remove) = (0.0f64, 0.0f64);
            for seed in 0..seeds_here {
                let backends = names(n);
                let before = conns(scheme, seed, m, &backends, k);
                let total: usize = before.iter().map(HashSet::len).sum();
                // G2 add: backend web-N joins.
                let mut more = backends.clone();
                more.push(format!("web-{n}"));
                let after = conns(scheme, seed, m, &more, k);
                add = add.max(closed(&before, &after) as f64 / total as f64);
                // G2 remove: web-N/2 leaves; its own connections are unavoidable.
                let gone = format!("web-{}", n / 2);
                let fewer: Vec<String> = backends.iter().filter(|b| **b != gone).cloned().collect();
                let after = conns(scheme, seed, m, &fewer, k);
                let own: usize = before.iter().filter(|b| b.contains(&gone)).count();
                let closed: usize = before
                    .iter()
                    .zip(&after)
                    .map(|(b, a)| b.difference(a).filter(|x| **x != gone).count())
                    .sum();
                remove = remove.max(closed as f64 / (total - own) as f64);
            }
            let t_add = 1.5 / (n as f64 + 1.0);
            let f = [
                ("scheme", scheme.to_string()),
                ("scenario", scenario.clone()),
            ];
            line("G2_add", &f, add, t_add, add <= t_add);
            line("G2_remove_extra", &f, remove, 0.005, remove <= 0.005);
            // G3: a client joins; existing clients' subsets must not change.
            let backends = names(n);
            let before = conns(scheme, 0, m, &backends, k);
            let after = conns(scheme, 0, m + 1, &backends, k);
            let total: usize = before.iter().map(HashSet::len).sum();
            let g3 = closed(&before, &after) as f64 / total as f64;
            line("G3", &f, g3, 1.0 / m as f64, g3 <= 1.0 / m as f64);
        }
    }
}

/// `--only sweep` (not in the default run): the capped ring (`ring`) against plain windows
/// (`ring_plain`) at every N within 5 of each grid point's: the worst G1 and the worst churn
/// on adding a backend, as a multiple of the minimum 1/(N+1), with how many of the ten sizes
/// miss the goal.
fn sweep() {
    for scheme in ["ring", "ring_plain"] {
        for m in [100u64, 300, 1000] {
            for n in [10usize, 100, 300] {
                for k in [5usize, 10, 20] {
                    if k >= n {
                        continue;
                    }
                    let (mut g1, mut g1_miss, mut add, mut add_miss) = (0.0f64, 0, 0.0f64, 0);
                    for size in n.saturating_sub(5).max(k + 1)..n + 5 {
                        let backends = names(size);
                        let before = conns(scheme, 0, m, &backends, k);
                        let count = per_backend(&before, size);
                        let mean = (m as f64) * k as f64 / size as f64;
                        let max = *count.iter().max().unwrap() as f64 / mean;
                        g1 = g1.max(max);
                        g1_miss += usize::from(max > (mean.ceil() / mean).max(1.10) + 1e-9);
                        let mut more = backends.clone();
                        more.push(format!("web-{size}"));
                        let after = conns(scheme, 0, m, &more, k);
                        let ratio = closed(&before, &after) as f64 / (m as f64 * k as f64)
                            * (size as f64 + 1.0);
                        add = add.max(ratio);
                        add_miss += usize::from(ratio > 1.5);
                    }
                    let f = [
                        ("scheme", scheme.to_string()),
                        (
                            "scenario",
                            format!("M{m}_N{}to{}_k{k}", n.saturating_sub(5).max(k + 1), n + 4),
                        ),
                        ("g1_misses", g1_miss.to_string()),
                        ("g1_worst", format!("{g1:.4}")),
                        ("add_misses", add_miss.to_string()),
                    ];
                    line("G2_add_sweep", &f, add, 1.5, add_miss == 0 && g1_miss == 0);
                }
            }
        }
    }
}

fn table(backends: &[String], config: &RouteConfig) -> RouteTable {
    RouteTable::new(backends.iter().map(|b| (b.as_str(), 1)), config)
}

/// Names without ordinals (a Deployment's pods).
fn deployment(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("echo-{i}-pod")).collect()
}

/// G4: key-space share max/mean; G5: keys moved on ±1 endpoint relative to the minimum;
/// for jump (ordinal names), rendezvous and Maglev (names without ordinals).
fn routing(quick: bool) {
    let default = RouteConfig::default();
    let all_rendezvous = RouteConfig {
        rendezvous_max: usize::MAX,
        ..RouteConfig::default()
    };
    let all_multiprobe = RouteConfig {
        rendezvous_max: 0,
        ..RouteConfig::default()
    };
    let maglev = RouteConfig {
        large: LargeSet::Maglev,
        ..RouteConfig::default()
    };
    type Names = fn(usize) -> Vec<String>;
    let cases: Vec<(&str, Names, usize, &RouteConfig, bool)> = if quick {
        vec![
            ("jump", names, 100, &default, true),
            ("rendezvous", deployment, 40, &default, true),
            ("multiprobe", deployment, 1000, &default, true),
        ]
    } else {
        vec![
            ("jump", names, 10, &default, true),
            ("jump", names, 100, &default, true),
            ("jump", names, 1000, &default, true),
            ("rendezvous", deployment, 10, &default, true),
            ("rendezvous", deployment, 40, &default, true),
            ("rendezvous", deployment, 100, &all_rendezvous, true),
            ("rendezvous", deployment, 1000, &all_rendezvous, false),
            ("multiprobe", deployment, 10, &all_multiprobe, true),
            ("multiprobe", deployment, 64, &default, true),
            ("multiprobe", deployment, 100, &default, true),
            ("multiprobe", deployment, 128, &default, true),
            ("multiprobe", deployment, 300, &default, true),
            ("multiprobe", deployment, 1000, &default, true),
            ("multiprobe", deployment, 3000, &default, true),
            ("maglev", deployment, 1000, &maglev, true),
        ]
    };
    for (method, namer, n, config, share) in cases {
        let backends = namer(n);
        let t = table(&backends, config);
        assert_eq!(
            method,
            match t.method() {
                RouteMethod::Jump => "jump",
                RouteMethod::Rendezvous => "rendezvous",
                RouteMethod::MultiProbe => "multiprobe",
                RouteMethod::Maglev => "maglev",
            }
        );
        if share {
            // Maglev: exact slot counts; multi-probe: exact shares (probes as independent
            // uniform positions); jump and rendezvous: sampled keys (their exact share is
            // 1/N in expectation; what is left is sampling noise).
            let (share, how) = match t.method() {
                RouteMethod::Maglev => (t.shares(), "slots".to_string()),
                RouteMethod::MultiProbe => (t.shares(), "exact".to_string()),
                _ => {
                    let keys: u64 = match (quick, n) {
                        (true, _) => 200_000,
                        (false, 1000) => 20_000_000,
                        (false, _) => 2_000_000,
                    };
                    let mut c = vec![0u64; n];
                    for k in 0..keys {
                        c[t.route(mix(k)).unwrap()] += 1;
                    }
                    (
                        c.iter().map(|&x| x as f64 / keys as f64).collect(),
                        format!("sampled_{keys}_keys"),
                    )
                }
            };
            let max = share.iter().cloned().fold(0.0, f64::max) * n as f64;
            line(
                "G4",
                &[
                    ("scenario", format!("N{n}")),
                    ("method", method.into()),
                    ("measure", how),
                ],
                max,
                1.05,
                max <= 1.05,
            );
        }
        // About 2000 keys per endpoint (a sampling deviation near 2 %), fewer where a pick
        // scores all N endpoints.
        let sample: u64 = match (quick, method, n) {
            (true, _, _) => 200_000,
            (false, "rendezvous", 1000) => 1_000_000,
            _ => (2000 * n as u64).clamp(200_000, 4_000_000),
        };
        let keys: Vec<u64> = (0..sample).map(|k| mix(k ^ 0x5eed_0000)).collect();
        let before = table(&backends, config);
        let mut more = backends.clone();
        more.push(namer(n + 1).pop().unwrap());
        let added = table(&more, config);
        let gone = n / 2;
        let fewer: Vec<String> = backends
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, b)| b.clone())
            .collect();
        let removed = table(&fewer, config);
        let (mut on_add, mut on_remove) = (0usize, 0usize);
        // Keys that moved other than to the added endpoint or from the removed one: 0 for
        // a minimally disruptive method.
        let (mut add_elsewhere, mut remove_elsewhere) = (0usize, 0usize);
        let new_name = &more[n];
        for &k in &keys {
            let b = &backends[before.route(k).unwrap()];
            let a = &more[added.route(k).unwrap()];
            if b != a {
                on_add += 1;
                add_elsewhere += usize::from(a != new_name);
            }
            if *b != fewer[removed.route(k).unwrap()] {
                on_remove += 1;
                remove_elsewhere += usize::from(*b != backends[gone]);
            }
        }
        let add = on_add as f64 / keys.len() as f64 * (n as f64 + 1.0);
        let remove = on_remove as f64 / keys.len() as f64 * n as f64;
        let f = |op: &str, elsewhere: usize, measure: &str| {
            vec![
                ("scenario", format!("N{n}")),
                ("method", method.to_string()),
                ("op", op.to_string()),
                ("measure", measure.to_string()),
                ("moved_elsewhere", elsewhere.to_string()),
            ]
        };
        let sampled = format!("sampled_{}_keys", keys.len());
        if method == "multiprobe" {
            // The sampled keys check that only the changed endpoint's keys move (the
            // figure is the exact one below; the sampled ratio carries sampling noise).
            for (op, elsewhere, ratio) in [
                ("add", add_elsewhere, add),
                ("remove_middle", remove_elsewhere, remove),
            ] {
                let mut fields = f(op, elsewhere, &sampled);
                fields.push(("sampled_ratio", format!("{ratio:.4}")));
                line(
                    "G5_moved_elsewhere",
                    &fields,
                    elsewhere as f64,
                    0.0,
                    elsewhere == 0,
                );
            }
        } else {
            line(
                "G5",
                &f("add", add_elsewhere, &sampled),
                add,
                1.1,
                add <= 1.1,
            );
            line(
                "G5",
                &f("remove_middle", remove_elsewhere, &sampled),
                remove,
                1.1,
                remove <= 1.1,
            );
        }
        if method == "multiprobe" && add_elsewhere == 0 && remove_elsewhere == 0 {
            // Only the changed endpoint's keys moved (checked above on the sampled keys),
            // so the exact remap is its exact share.
            let add = added.shares()[n] * (n as f64 + 1.0);
            let remove = before.shares()[gone] * n as f64;
            line("G5", &f("add", 0, "exact"), add, 1.1, add <= 1.1);
            line(
                "G5",
                &f("remove_middle", 0, "exact"),
                remove,
                1.1,
                remove <= 1.1,
            );
        }
    }
}

/// The hash of key number `k` (a user id's hash; formatting strings would only cost time).
fn mix(k: u64) -> u64 {
    hash_str(&format!("{k:x}"))
}

/// G6: Zipf(1) over 100k keys, N=100, 400k requests, bounded load c=1.25 (cumulative
/// counts stand in for in-flight ones, as in the note's simulation).
fn hot_keys(quick: bool) {
    let n = 100;
    let backends = names(n);
    let t = table(&backends, &RouteConfig::default());
    let keys = 100_000usize;
    let requests = if quick { 100_000 } else { 400_000 };
    let mut cdf = Vec::with_capacity(keys);
    let mut acc = 0.0;
    for r in 1..=keys {
        acc += 1.0 / r as f64;
        cdf.push(acc);
    }
    let key_hashes: Vec<u64> = (0..keys).map(|k| hash_str(&format!("user-{k}"))).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    for c in [None, Some(1.25)] {
        let mut load = vec![0u64; n];
        let mut primary = 0u64;
        for assigned in 0..requests {
            let u = rng.f64() * acc;
            let rank = cdf.partition_point(|&x| x < u).min(keys - 1);
            let key = key_hashes[rank];
            let first = t.route(key).unwrap();
            let to = match c {
                None => first,
                Some(c) => {
                    let cap = (c * (assigned + 1) as f64 / n as f64).ceil() as u64;
                    t.route_where(key, |i| load[i] < cap).unwrap_or(first)
                }
            };
            if to == first {
                primary += 1;
            }
            load[to] += 1;
        }
        let max = *load.iter().max().unwrap() as f64 / (requests as f64 / n as f64);
        let on_primary = primary as f64 / requests as f64;
        let bound = c.map_or("none".to_string(), |c| format!("{c}"));
        let f = [
            ("scenario", "zipf1_keys100k_N100".to_string()),
            ("bounded_load", bound),
            ("on_primary", format!("{on_primary:.3}")),
        ];
        match c {
            Some(_) => line(
                "G6",
                &f,
                max,
                1.25,
                max <= 1.25 + 1e-9 && on_primary >= 0.70,
            ),
            None => line("G6_unbounded", &f, max, 1.25, max <= 1.25),
        }
    }
}

/// An echo backend on 127.0.0.1 that counts the calls it answers; `fail_every` > 0 makes
/// every `fail_every`-th call answer an error instead (a gray failure).
struct Backend {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    fail: Arc<AtomicU64>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Backend::serve(listener)
    }

    fn serve(listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(AtomicU64::new(0));
        let router = {
            let (served, fail) = (Arc::clone(&served), Arc::clone(&fail));
            Router::new().unary(UNARY, move |_ctx: Context, m: Msg| {
                let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                let every = fail.load(Ordering::SeqCst);
                async move {
                    if every > 0 && n % every == 0 {
                        return Err(Error::remote(13, "gray failure"));
                    }
                    Ok::<_, Error>(m)
                }
            })
        };
        let server = Server::new(router);
        tokio::spawn(async move { server.serve(listener).await });
        Backend { addr, served, fail }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

async fn dial(addr: String) -> std::io::Result<Tcp> {
    drpc_core::dial(addr).await
}

/// Workers making calls until stopped; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(conn: &Balanced<Tcp>, workers: usize, key: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|w| {
                let (conn, stop, failed, ok) = (
                    conn.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&failed),
                    Arc::clone(&ok),
                );
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let mut opts = CallOptions::new().with_timeout(Duration::from_secs(5));
                        if key {
                            opts = opts.with_metadata("drpc-route-key", format!("u{w}-{i}"));
                        }
                        let r: Result<Msg, Error> = conn
                            .call(
                                UNARY,
                                &Msg {
                                    text: "x".into(),
                                    n: 1,
                                },
                                opts,
                            )
                            .await;
                        match r {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        // A steady rate rather than a busy loop: about 1000 calls/s per worker.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            failed,
            ok,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Waits until `cond` holds (polling every 2 ms) or `limit` passes; the time it took.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Some(start.elapsed())
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::INFINITY, |d| d.as_secs_f64())
}

/// G7 (push): a backend added to a push discovery server gets its first call.
async fn g7_push() {
    let discovery = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let push = PushServer::new();
        let server = Server::new(push_service(Router::new(), push.clone()));
        tokio::spawn(async move { server.serve(listener).await });
        (push, addr)
    };
    let (push, daddr) = discovery;
    let a = Backend::start().await;
    let b = Backend::start().await;
    push.set("echo", vec![a.addr()]);
    let pool = drpc_pool::Pool::new(drpc_pool::PoolConfig::default());
    let watch = pool.keyed(daddr.to_string(), dial);
    let conn: Balanced<Tcp> = Balanced::new(
        PushResolver::new(watch, "echo"),
        dial,
        BalanceConfig::default(),
    );
    until(Duration::from_secs(5), || {
        conn.count(EndpointState::Ready) == 1
    })
    .await;
    let load = Load::start(&conn, 4, false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    push.set("echo", vec![a.addr(), b.addr()]);
    let took = until(Duration::from_secs(10), || b.served() > 0).await;
    let (_, failed) = load.stop().await;
    let v = secs(took);
    line(
        "G7",
        &[
            ("scenario", "push_new_backend_first_call".into()),
            ("failed_calls", failed.to_string()),
        ],
        v,
        1.0,
        v <= 1.0 && failed == 0,
    );
}

/// G8c: one backend of five answers every second call with an error; outlier ejection (A50
/// defaults) takes it out, then brings it back.
async fn g8c() {
    let backends: Vec<Backend> = start_backends(5).await;
    backends[2].fail.store(2, Ordering::SeqCst);
    let addrs: Vec<String> = backends.iter().map(Backend::addr).collect();
    let (_handle, resolver) = manual(addrs.clone());
    let conn: Balanced<Tcp> = Balanced::new(
        resolver,
        dial,
        BalanceConfig {
            outlier: Some(OutlierConfig::default()),
            ..BalanceConfig::default()
        },
    );
    until(Duration::from_secs(5), || {
        conn.count(EndpointState::Ready) == 5
    })
    .await;
    let start = Instant::now();
    let load = Load::start(&conn, 8, false);
    let bad = addrs[2].clone();
    let is_ejected = |conn: &Balanced<Tcp>| {
        conn.stats()
            .endpoints
            .iter()
            .any(|e| e.addr == bad && e.ejected)
    };
    let ejected = until(Duration::from_secs(40), || is_ejected(&conn)).await;
    let ejected_at = Instant::now();
    let served_then = backends[2].served();
    // While ejected it gets no calls; it comes back after the base ejection time (30 s).
    let back = until(Duration::from_secs(60), || !is_ejected(&conn)).await;
    let served_while_out = backends[2].served() - served_then;
    let (ok, failed) = load.stop().await;
    let v = ejected.map_or(f64::INFINITY, |_| (ejected_at - start).as_secs_f64());
    line(
        "G8c",
        &[
            ("scenario", "N5_one_failing_50pct_a50_defaults".into()),
            ("calls_while_ejected", served_while_out.to_string()),
            ("ok", ok.to_string()),
            ("failed", failed.to_string()),
        ],
        v,
        20.0,
        v <= 20.0,
    );
    let b = secs(back);
    line(
        "G8c_return",
        &[("scenario", "N5_base_ejection_30s".into())],
        b,
        30.0,
        // Back after the base ejection time, at the evaluation that follows it.
        (29.0..=40.5).contains(&b),
    );
}

async fn start_backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Backend::start().await);
    }
    v
}

/// G9: a new backend refuses its first `j` connects, then accepts: it stays listed, gets no
/// call while down, and serves within (sum of the first j backoff delays) × 1.2 + 1 s of its
/// first connect.
async fn g9(j: u64) {
    let live = Backend::start().await;
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port_addr = probe.local_addr().unwrap();
    drop(probe); // refused until bound again
    let conn: Balanced<Tcp> = Balanced::new(
        drpc_pool::balance::resolver::StaticResolver::new([live.addr(), port_addr.to_string()]),
        dial,
        BalanceConfig::default(),
    );
    let first = Instant::now();
    let load = Load::start(&conn, 2, false);
    let dead = port_addr.to_string();
    let failures = |conn: &Balanced<Tcp>| {
        conn.stats()
            .endpoints
            .iter()
            .find(|e| e.addr == dead)
            .map_or(0, |e| e.connect_failures)
    };
    until(Duration::from_secs(40), || failures(&conn) >= j).await;
    let calls_while_down = conn.stats().calls(&dead);
    let listener = TcpListener::bind(port_addr).await.expect("rebind");
    let backend = Backend::serve(listener);
    let served = until(Duration::from_secs(40), || backend.served() > 0).await;
    let total = served.map_or(f64::INFINITY, |_| first.elapsed().as_secs_f64());
    let (_, failed) = load.stop().await;
    let delays: f64 = (0..j).map(|i| 1.6f64.powi(i as i32)).sum();
    let target = delays * 1.2 + 1.0;
    line(
        "G9",
        &[
            ("scenario", format!("refuses_first_{j}")),
            ("calls_while_down", calls_while_down.to_string()),
            ("failed_calls", failed.to_string()),
        ],
        total,
        target,
        total <= target && calls_while_down == 0 && failed == 0,
    );
}

/// G12: discovery briefly publishes an empty set; with `keep_last_good` the balancer keeps
/// serving on the last known-good set.
async fn g12() {
    let backends = start_backends(3).await;
    let addrs: Vec<String> = backends.iter().map(Backend::addr).collect();
    let (handle, resolver) = manual(addrs.clone());
    let conn: Balanced<Tcp> = Balanced::new(
        resolver,
        dial,
        BalanceConfig {
            keep_last_good: Some(Duration::from_secs(30)),
            ..BalanceConfig::default()
        },
    );
    until(Duration::from_secs(5), || {
        conn.count(EndpointState::Ready) == 3
    })
    .await;
    let load = Load::start(&conn, 4, false);
    handle.set(Vec::new());
    let mut min_endpoints = usize::MAX;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        min_endpoints = min_endpoints.min(conn.endpoints().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Half the endpoints for one update, then all back.
    handle.set(addrs[..1].to_vec());
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.set(addrs.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.stop().await;
    line(
        "G12",
        &[
            ("scenario", "empty_update_2s_then_one_of_three".into()),
            ("min_endpoints", min_endpoints.to_string()),
            ("ok", ok.to_string()),
        ],
        failed as f64,
        0.0,
        failed == 0 && min_endpoints == 3,
    );
}

/// G11: pick cost (p50 over batches) at N=1000 for the default picker and for routing by
/// key, and the cost of rebuilding the snapshot when one endpoint changes.
async fn g11() {
    let n = 1000;
    // In-memory connections: every endpoint is ready without 1000 sockets.
    let server =
        Server::new(Router::new().unary(
            UNARY,
            |_c: Context, m: Msg| async move { Ok::<_, Error>(m) },
        ));
    let dial_mem = {
        let server = server.clone();
        move |_addr: String| {
            let server = server.clone();
            async move {
                let (a, b) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move { server.serve_one(b).await });
                Ok::<_, std::io::Error>(TransportConn::new(a))
            }
        }
    };
    let named = |names: Vec<String>| -> Vec<ResolvedEndpoint> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                ResolvedEndpoint::new(format!("10.0.{}.{}:80", i / 250, i % 250)).named(name)
            })
            .collect()
    };
    let web = named(names(n));
    let pods = named(deployment(n));
    let maglev = RouteConfig {
        large: LargeSet::Maglev,
        ..RouteConfig::default()
    };
    let default = RouteConfig::default();
    // The table alone (no balancer): built from the names, p50 of 21 builds.
    for (label, config) in [("multiprobe", &default), ("maglev", &maglev)] {
        let names = deployment(n);
        let mut samples: Vec<f64> = (0..21)
            .map(|_| {
                let t = std::time::Instant::now();
                std::hint::black_box(table(&names, config));
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        let p50 = samples[samples.len() / 2];
        line(
            "G11_table_build_ms",
            &[("scenario", format!("{label}_N{n}"))],
            p50,
            5.0,
            p50 <= 5.0,
        );
    }
    for (label, endpoints, take, config) in [
        ("p2c", &web, n, None),
        ("route_jump", &web, 100, Some(&default)),
        ("route_jump", &web, n, Some(&default)),
        ("route_rendezvous", &pods, 48, Some(&default)),
        ("route_multiprobe", &pods, 64, Some(&default)),
        ("route_multiprobe", &pods, 100, Some(&default)),
        ("route_multiprobe", &pods, 128, Some(&default)),
        ("route_multiprobe", &pods, n, Some(&default)),
        ("route_maglev", &pods, n, Some(&maglev)),
    ] {
        let route = config.is_some();
        let (handle, resolver) = manual(Vec::new());
        handle.set_endpoints(endpoints[..take].to_vec());
        let conn = Balanced::new(
            resolver,
            dial_mem.clone(),
            BalanceConfig {
                route: config.cloned(),
                ..BalanceConfig::default()
            },
        );
        until(Duration::from_secs(30), || {
            conn.count(EndpointState::Ready) == take
        })
        .await;
        let keys: Vec<String> = (0..1024).map(|i| format!("user-{i}")).collect();
        let mut batches = Vec::new();
        for b in 0..200 {
            let t = std::time::Instant::now();
            for i in 0..1000 {
                let key = route.then(|| keys[(b * 1000 + i) % 1024].as_str());
                let ok = conn.pick_probe(key);
                std::hint::black_box(ok);
            }
            batches.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        batches.sort_by(f64::total_cmp);
        let p50 = batches[batches.len() / 2];
        let p99 = batches[batches.len() * 99 / 100];
        line(
            "G11_pick_ns",
            &[
                ("scenario", format!("{label}_N{take}")),
                ("p99_batch", format!("{p99:.0}")),
            ],
            p50,
            100.0,
            p50 <= 100.0,
        );
        if take == n {
            // Rebuild: one endpoint replaced; until the new snapshot is visible.
            let mut samples = Vec::new();
            for r in 0..20 {
                let mut next = endpoints[..take].to_vec();
                // A replacement pod: the next ordinal, or another random name.
                let name = match next[r].name.as_deref() {
                    Some(x) if x.starts_with("web-") => format!("web-{}", take + r),
                    _ => format!("echo-new{r}-pod"),
                };
                next[r] = ResolvedEndpoint::new(format!("10.9.0.{r}:80")).named(name);
                let want = next[r].addr.clone();
                let t = std::time::Instant::now();
                handle.set_endpoints(next);
                // Spin (yielding) rather than sleep: the rebuild is well under a timer tick.
                while conn.endpoints()[r] != want {
                    tokio::task::yield_now().await;
                }
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            samples.sort_by(f64::total_cmp);
            let p50 = samples[samples.len() / 2];
            line(
                "G11_rebuild_ms",
                &[("scenario", format!("{label}_N{take}_one_replaced"))],
                p50,
                5.0,
                p50 <= 5.0,
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only PART` (subsetting, routing, hot_keys, g11, realtime) runs one part.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let start = Instant::now();
    if part("subsetting") {
        subsetting(quick);
    }
    if only.as_deref() == Some("sweep") {
        sweep();
    }
    if part("routing") {
        routing(quick);
    }
    if part("hot_keys") {
        hot_keys(quick);
    }
    if part("g11") {
        g11().await;
    }
    if part("realtime") {
        g7_push().await;
        if !quick {
            g12().await;
            let (a, b, c) = tokio::join!(g9(1), g9(3), g9(5));
            let _ = (a, b, c);
            g8c().await;
        }
    }
    println!(
        "metric=run_seconds value={:.1} target=180 pass={}",
        start.elapsed().as_secs_f64(),
        start.elapsed() < Duration::from_secs(180)
    );
}
