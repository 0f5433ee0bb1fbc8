//! Outlier ejection for gray failures, after gRPC A50: an endpoint that connects fine but
//! fails many of its calls is taken out of the picker for a while, then brought back.
//!
//! Every [`OutlierConfig::interval`] the balancer hands [`Detector::evaluate`] each
//! endpoint's successes and failures since the last run; the detector (sans-IO: it takes
//! `now`, holds no clock) decides, in A50's order:
//!
//! 1. **Success rate**: among endpoints with at least `request_volume` calls, when there are
//!    at least `minimum_hosts` of them, eject each whose success rate is below
//!    mean − stdev × `stdev_factor`/1000.
//! 2. **Failure percentage**: among the same kind of candidates, eject each failing more
//!    than `threshold` % of its calls.
//! 3. Bring back each endpoint ejected for longer than `base_ejection_time` × its ejection
//!    count (capped at `max(base, max_ejection_time)`); an endpoint not ejected this round
//!    has its count lowered by one.
//!
//! At most `max_ejection_percent` % of the endpoints are ejected at once, but always one may
//! be; and one endpoint always stays (never all of them). With A50's defaults an endpoint
//! failing half of its calls among four healthy ones is ejected at the first evaluation that
//! sees 100 of its calls: within one or two intervals (10–20 s).

use std::time::Duration;

use tokio::time::Instant;

/// Outlier ejection settings (gRPC A50's defaults); set in
/// [`BalanceConfig::outlier`](super::BalanceConfig::outlier).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// How often endpoints are evaluated. Default 10 s.
    pub interval: Duration,
    /// How long a first ejection lasts; the n-th lasts n times as long. Default 30 s.
    pub base_ejection_time: Duration,
    /// The longest ejection (unless `base_ejection_time` is longer). Default 300 s.
    pub max_ejection_time: Duration,
    /// At most this percentage of endpoints ejected at once (but always one may be).
    /// Default 10.
    pub max_ejection_percent: u32,
    /// The success-rate rule; default on.
    pub success_rate: Option<SuccessRate>,
    /// The failure-percentage rule; default on.
    pub failure_percentage: Option<FailurePercentage>,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate: Some(SuccessRate::default()),
            failure_percentage: Some(FailurePercentage::default()),
        }
    }
}

/// A50's success-rate rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessRate {
    /// Eject below mean − stdev × this / 1000. Default 1900.
    pub stdev_factor: u32,
    /// At least this many endpoints with enough calls. Default 5.
    pub minimum_hosts: usize,
    /// Calls an endpoint needs in an interval to count. Default 100.
    pub request_volume: u64,
}

impl Default for SuccessRate {
    fn default() -> Self {
        SuccessRate {
            stdev_factor: 1900,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

/// A50's failure-percentage rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePercentage {
    /// Eject above this percentage of failed calls. Default 85.
    pub threshold: u32,
    /// At least this many endpoints with enough calls. Default 5.
    pub minimum_hosts: usize,
    /// Calls an endpoint needs in an interval to count. Default 50.
    pub request_volume: u64,
}

impl Default for FailurePercentage {
    fn default() -> Self {
        FailurePercentage {
            threshold: 85,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

/// One endpoint's ejection state, kept across evaluations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ejection {
    /// When it was ejected, while it is.
    pub ejected_at: Option<Instant>,
    /// How many times it was ejected recently (lowered by one per healthy interval).
    pub multiplier: u32,
}

impl Ejection {
    /// Whether it is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_at.is_some()
    }
}

/// One endpoint as [`Detector::evaluate`] sees it.
#[derive(Debug)]
pub struct Sample<'a> {
    /// Calls that succeeded since the last evaluation.
    pub successes: u64,
    /// Calls that failed since the last evaluation.
    pub failures: u64,
    /// Its ejection state, updated in place.
    pub ejection: &'a mut Ejection,
}

impl Sample<'_> {
    fn volume(&self) -> u64 {
        self.successes + self.failures
    }
}

/// The A50 detector: pure, deterministic, driven by the balancer.
#[derive(Debug, Clone)]
pub struct Detector {
    config: OutlierConfig,
}

impl Detector {
    /// A detector with `config`.
    pub fn new(config: OutlierConfig) -> Detector {
        Detector { config }
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// One evaluation at `now`; returns how many endpoints changed (ejected or brought
    /// back).
    pub fn evaluate(&self, now: Instant, samples: &mut [Sample<'_>]) -> usize {
        let n = samples.len();
        let mut changed = 0;
        let max_ejected = ((n as u64 * u64::from(self.config.max_ejection_percent)) / 100)
            .max(1)
            .min(n.saturating_sub(1) as u64) as usize;
        let mut ejected_now: Vec<bool> = vec![false; n];
        if let Some(rule) = self.config.success_rate {
            let cands: Vec<usize> = (0..n)
                .filter(|&i| samples[i].volume() >= rule.request_volume.max(1))
                .collect();
            if cands.len() >= rule.minimum_hosts {
                let rates: Vec<f64> = cands
                    .iter()
                    .map(|&i| samples[i].successes as f64 / samples[i].volume() as f64)
                    .collect();
                let mean = rates.iter().sum::<f64>() / rates.len() as f64;
                let var =
                    rates.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / rates.len() as f64;
                let floor = mean - var.sqrt() * f64::from(rule.stdev_factor) / 1000.0;
                for (&i, &rate) in cands.iter().zip(&rates) {
                    if rate < floor {
                        changed += self.eject(now, samples, i, max_ejected, &mut ejected_now);
                    }
                }
            }
        }
        if let Some(rule) = self.config.failure_percentage {
            let cands: Vec<usize> = (0..n)
                .filter(|&i| samples[i].volume() >= rule.request_volume.max(1))
                .collect();
            if cands.len() >= rule.minimum_hosts {
                for i in cands {
                    let pct = samples[i].failures as f64 * 100.0 / samples[i].volume() as f64;
                    if pct > f64::from(rule.threshold) {
                        changed += self.eject(now, samples, i, max_ejected, &mut ejected_now);
                    }
                }
            }
        }
        for (i, s) in samples.iter_mut().enumerate() {
            match s.ejection.ejected_at {
                Some(at) if !ejected_now[i] => {
                    let base = self.config.base_ejection_time;
                    let for_ = (base * s.ejection.multiplier.max(1))
                        .min(base.max(self.config.max_ejection_time));
                    if now >= at + for_ {
                        s.ejection.ejected_at = None;
                        changed += 1;
                    }
                }
                None if s.ejection.multiplier > 0 => s.ejection.multiplier -= 1,
                _ => {}
            }
        }
        changed
    }

    fn eject(
        &self,
        now: Instant,
        samples: &mut [Sample<'_>],
        i: usize,
        max_ejected: usize,
        ejected_now: &mut [bool],
    ) -> usize {
        if samples[i].ejection.is_ejected() {
            return 0;
        }
        let ejected = samples.iter().filter(|s| s.ejection.is_ejected()).count();
        if ejected >= max_ejected {
            return 0;
        }
        samples[i].ejection.ejected_at = Some(now);
        samples[i].ejection.multiplier += 1;
        ejected_now[i] = true;
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates `rates` (successes, failures per endpoint) with fresh or given states.
    fn run(d: &Detector, now: Instant, counts: &[(u64, u64)], states: &mut [Ejection]) -> usize {
        let mut samples: Vec<Sample<'_>> = counts
            .iter()
            .zip(states.iter_mut())
            .map(|(&(successes, failures), ejection)| Sample {
                successes,
                failures,
                ejection,
            })
            .collect();
        d.evaluate(now, &mut samples)
    }

    #[test]
    fn an_endpoint_failing_half_its_calls_is_ejected_then_brought_back() {
        let d = Detector::new(OutlierConfig::default());
        let t0 = Instant::now();
        let mut st = [Ejection::default(); 5];
        let counts = [(200, 0), (200, 0), (100, 100), (200, 0), (200, 0)];
        assert_eq!(run(&d, t0, &counts, &mut st), 1);
        assert!(st[2].is_ejected());
        assert_eq!(st.iter().filter(|e| e.is_ejected()).count(), 1);
        // Still out 20 s later (it gets no calls while ejected), back after 30 s.
        let idle = [(200, 0), (200, 0), (0, 0), (200, 0), (200, 0)];
        run(&d, t0 + Duration::from_secs(20), &idle, &mut st);
        assert!(st[2].is_ejected());
        assert_eq!(run(&d, t0 + Duration::from_secs(30), &idle, &mut st), 1);
        assert!(!st[2].is_ejected());
        assert_eq!(st[2].multiplier, 1);
        // Ejected again at once: the second ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(40);
        run(&d, t1, &counts, &mut st);
        assert_eq!(st[2].multiplier, 2);
        run(&d, t1 + Duration::from_secs(59), &idle, &mut st);
        assert!(st[2].is_ejected());
        run(&d, t1 + Duration::from_secs(60), &idle, &mut st);
        assert!(!st[2].is_ejected());
    }

    #[test]
    fn too_few_hosts_or_calls_eject_nothing() {
        let d = Detector::new(OutlierConfig::default());
        let now = Instant::now();
        let mut st = [Ejection::default(); 4];
        assert_eq!(
            run(&d, now, &[(0, 200), (200, 0), (200, 0), (200, 0)], &mut st),
            0
        );
        let mut st = [Ejection::default(); 5];
        assert_eq!(
            run(
                &d,
                now,
                &[(40, 40), (99, 0), (99, 0), (99, 0), (99, 0)],
                &mut st
            ),
            0
        );
    }

    #[test]
    fn failure_percentage_ejects_and_one_endpoint_always_stays() {
        let config = OutlierConfig {
            success_rate: None,
            max_ejection_percent: 100,
            failure_percentage: Some(FailurePercentage {
                minimum_hosts: 2,
                ..FailurePercentage::default()
            }),
            ..OutlierConfig::default()
        };
        let d = Detector::new(config);
        let mut st = [Ejection::default(); 3];
        run(&d, Instant::now(), &[(0, 100), (0, 100), (0, 100)], &mut st);
        assert_eq!(st.iter().filter(|e| e.is_ejected()).count(), 2);
        // 10 % of 5 is 0, but one may always be ejected.
        let d = Detector::new(OutlierConfig {
            success_rate: None,
            ..OutlierConfig::default()
        });
        let mut st = [Ejection::default(); 5];
        run(&d, Instant::now(), &[(0, 100); 5], &mut st);
        assert_eq!(st.iter().filter(|e| e.is_ejected()).count(), 1);
    }
}
