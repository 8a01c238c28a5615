//! The rolling restart's rules, apart from its steps (those are the engine's `Rolling` phase):
//!
//! - **Intent lives on Fly.** Before a Machine is restarted, the change that needs it is written into the
//!   Machine's metadata (`INTENT_KEY`: `RestartMark::Owed`); once the Machine is back started with passing
//!   checks it becomes `RestartMark::Done` for that change (so a retried run of the same change knows). Every
//!   run lists the Machines, and the list carries their metadata: any later run sees unfinished intent and
//!   finishes it first, so a roll outlives the run that began it.
//! - **A start after the intent satisfies it.** A change whose type needs a restart is owed by every Machine
//!   started before the change's revision time; one whose newest start is later booted with it (a restart by a
//!   killed run, a deploy, a scale-up) and needs none — this is what keeps a Machine from being restarted twice
//!   for one change, whichever run (or retry) sees it. A Machine that boots before the change is queryable
//!   but after its revision time is the receiver's to catch: it answers `restart: required`.
//! - **Leases free themselves.** They are short (`LEASE_TTL_S`) and renewed while the run works, and their
//!   description names the change, so a lease left by a killed run of ours is recognised and waited out.
//! - **Every region keeps serving.** `MaxUnavailable` bounds how many Machines are down at once, per region
//!   (`region_cap`); a region with one serving Machine is restarted only while no other Machine is down.
//! - **No restart is started that the budget cannot see through** (`restart_estimate_ms`); what is left is
//!   reported resumable and stays recorded on the Machines.

use crate::machines::Machine;

/// The metadata key holding a Machine's unfinished restart. Not `fly_`-prefixed: those keys are Fly's own.
pub const INTENT_KEY: &str = "sanity_fly_sync_restart";
/// Lease time-to-live: a killed run's leases free themselves this soon.
pub const LEASE_TTL_S: u64 = 12;
/// How often a held lease is renewed (well inside its TTL, with room for one slow answer).
pub const RENEW_EVERY_MS: u64 = 4_000;
/// Every lease we take is described so; what follows names the change.
pub const LEASE_PREFIX: &str = "sanity-fly-sync restart";
/// What a restart is assumed to take before this run has seen one: stop, start, checks passing.
pub const DEFAULT_RESTART_ESTIMATE_MS: u64 = 10_000;
/// A `/wait` long-poll blocks at most this long (Fly's own maximum is 60 s).
pub const WAIT_S: u64 = 30;

/// A restart owed: by Machines started before `since_ms` (a start after it satisfies it), for `change`
/// (`<document id>@<revision>`), and by whom (`scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub since_ms: u64,
    pub change: String,
    pub scope: Scope,
}

/// Who owes an intent's restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The Machine it is recorded on (its receiver asked).
    Machine,
    /// Every Machine of the app (in these regions, `None`: all) started before the intent's time: the change's
    /// type needs a restart. Recorded on each, but one record is enough for any run to know the whole roll —
    /// a run killed while recording still leaves a complete intent behind.
    App { regions: Option<Vec<String>> },
}

impl Intent {
    /// Whether `machine` started after this intent's time: then it runs the change already.
    pub fn satisfied_by(&self, machine: &Machine) -> bool {
        machine.newest_start_ms > self.since_ms
    }

    /// Whether `machine` owes this intent's restart (recorded on it or not).
    pub fn owed_by(&self, machine: &Machine) -> bool {
        match &self.scope {
            Scope::Machine => machine.owed() == Some(self) && !self.satisfied_by(machine),
            Scope::App { regions } => {
                regions.as_ref().is_none_or(|r| r.contains(&machine.region)) && !self.satisfied_by(machine)
            }
        }
    }
}

/// What our metadata key says of a Machine: a restart it owes, or the change its last restart was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartMark {
    Owed(Intent),
    /// The last restart, done: for which change, and how long it took (`took_ms`) — what the next roll expects.
    Done { change: String, took_ms: Option<u64> },
}

impl RestartMark {
    /// The metadata value: `1;<since ms>;<change>[;app[:<region>,…]]` for an owed restart (`app`: owed by every
    /// Machine started before it), `1;done;<change>[;<ms it took>]` for one done.
    pub fn value(&self) -> String {
        match self {
            RestartMark::Owed(i) => {
                let scope = match &i.scope {
                    Scope::Machine => String::new(),
                    Scope::App { regions: None } => ";app".into(),
                    // Joined as `&str`s, as every other list in the module is (one join routine in the module).
                    Scope::App { regions: Some(r) } => format!(";app:{}", r.iter().map(String::as_str).collect::<Vec<_>>().join(",")),
                };
                format!("1;{};{}{scope}", i.since_ms, i.change)
            }
            RestartMark::Done { change, took_ms: None } => format!("1;done;{change}"),
            RestartMark::Done { change, took_ms: Some(ms) } => format!("1;done;{change};{ms}"),
        }
    }

    /// Read a metadata value. One this version cannot read (written by a newer one, or edited by hand) still
    /// means a restart is owed — since the beginning of time, so any start satisfies it.
    pub fn parse(value: &str) -> RestartMark {
        let mut parts = value.splitn(4, ';');
        let scope = |s: Option<&str>| match s {
            None => Some(Scope::Machine),
            Some("app") => Some(Scope::App { regions: None }),
            Some(s) => s.strip_prefix("app:").map(|r| Scope::App { regions: Some(r.split(',').map(String::from).collect()) }),
        };
        let (version, since, change, last) = (parts.next(), parts.next(), parts.next(), parts.next());
        if let (Some("1"), Some("done"), Some(change)) = (version, since, change) {
            let took_ms = last.and_then(|ms| ms.parse().ok());
            return RestartMark::Done { change: change.to_string(), took_ms };
        }
        match (version, since, change, scope(last)) {
            (Some("1"), Some(since), Some(change), Some(scope)) if since.parse::<u64>().is_ok() => {
                RestartMark::Owed(Intent { since_ms: since.parse().unwrap_or(0), change: change.to_string(), scope })
            }
            _ => RestartMark::Owed(Intent { since_ms: 0, change: "unreadable intent".into(), scope: Scope::Machine }),
        }
    }
}

/// How many Machines may be down at once: a count, or a fraction of each region's serving Machines (as
/// flyctl's rolling strategy takes either), in parts per million (`333_333` is a third) — exact, and no
/// floating point in the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    Count(usize),
    Fraction(u32),
}

/// A whole: `MaxUnavailable::Fraction` counts parts of it.
pub const PER_MILLION: u64 = 1_000_000;

impl std::fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            // As a whole percentage, rounded half up.
            MaxUnavailable::Fraction(ppm) => write!(f, "{}%", (u64::from(*ppm) + PER_MILLION / 200) / (PER_MILLION / 100)),
        }
    }
}

impl MaxUnavailable {
    /// The most Machines of a region with `serving` Machines that may be down at once. A region is never
    /// emptied by us while it has more than one Machine; a one-Machine region is `cap 1`, and `may_start`
    /// adds that it goes only while nothing else is down.
    pub fn region_cap(self, serving: usize) -> usize {
        let wanted = match self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Fraction(ppm) => (u64::from(ppm) * serving as u64 / PER_MILLION) as usize,
        };
        wanted.min(serving.saturating_sub(1)).max(1)
    }

    /// The most Machines down at once across the app.
    pub fn total_cap(self) -> usize {
        match self {
            MaxUnavailable::Count(n) => n.max(1),
            MaxUnavailable::Fraction(_) => usize::MAX,
        }
    }
}

/// Whether one more Machine of a region may go down now: `down_here` of the region's `serving` are down,
/// `down_total` across the app, `lone_down` whether the only Machine of some region is down.
pub fn may_start(rule: MaxUnavailable, serving: usize, down_here: usize, down_total: usize, lone_down: bool) -> bool {
    if lone_down || down_total >= rule.total_cap() || down_here >= rule.region_cap(serving) {
        return false;
    }
    // A region's only Machine goes down on its own: every other region is whole meanwhile.
    serving > 1 || down_total == 0
}

/// The time to budget for one more restart: the slowest this run has seen; before it has seen one, the slowest
/// the Machines' last restarts took (their done marks); before any, the default.
pub fn restart_estimate_ms(observed: impl Iterator<Item = u64>, last_roll: impl Iterator<Item = u64>, restart_timeout_ms: u64) -> u64 {
    observed.max().or_else(|| last_roll.max()).unwrap_or(DEFAULT_RESTART_ESTIMATE_MS).min(restart_timeout_ms)
}

/// The description of our lease for `change`.
pub fn lease_description(change: &str) -> String {
    format!("{LEASE_PREFIX} for {change}")
}

pub fn lease_is_ours(description: &str) -> bool {
    description.starts_with(LEASE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_unknown_ones_still_owe_a_restart() {
        let owed = RestartMark::Owed(Intent { since_ms: 1_800_000_000_000, change: "siteSettings@rev-2".into(), scope: Scope::Machine });
        assert_eq!(owed.value(), "1;1800000000000;siteSettings@rev-2");
        assert_eq!(RestartMark::parse(&owed.value()), owed);
        for (scope, value) in [(Scope::App { regions: None }, "1;5;s@r;app"), (Scope::App { regions: Some(vec!["ord".into(), "nrt".into()]) }, "1;5;s@r;app:ord,nrt")] {
            let mark = RestartMark::Owed(Intent { since_ms: 5, change: "s@r".into(), scope });
            assert_eq!(mark.value(), value);
            assert_eq!(RestartMark::parse(value), mark);
        }
        let done = RestartMark::Done { change: "siteSettings@rev-2".into(), took_ms: None };
        assert_eq!(done.value(), "1;done;siteSettings@rev-2");
        assert_eq!(RestartMark::parse(&done.value()), done);
        let timed = RestartMark::Done { change: "siteSettings@rev-2".into(), took_ms: Some(4_200) };
        assert_eq!(timed.value(), "1;done;siteSettings@rev-2;4200");
        assert_eq!(RestartMark::parse(&timed.value()), timed);
        for odd in ["", "2;5;x", "1;soon;x", "garbage", "1;5;x;elsewhere"] {
            assert!(matches!(RestartMark::parse(odd), RestartMark::Owed(Intent { since_ms: 0, .. })), "{odd:?}");
        }
    }

    #[test]
    fn region_caps_keep_every_region_serving() {
        let third = MaxUnavailable::Fraction(333_333);
        assert_eq!([third.region_cap(32), third.region_cap(3), third.region_cap(2), third.region_cap(1)], [10, 1, 1, 1]);
        let two = MaxUnavailable::Count(2);
        assert_eq!([two.region_cap(5), two.region_cap(2), two.region_cap(1)], [2, 1, 1]);
        assert!(may_start(two, 5, 1, 1, false));
        assert!(!may_start(two, 5, 1, 2, false), "the app-wide count");
        assert!(!may_start(two, 2, 1, 1, false), "never both Machines of a two-Machine region");
        assert!(may_start(two, 1, 0, 0, false) && !may_start(two, 1, 0, 1, false), "a lone Machine goes only when nothing else is down");
        assert!(!may_start(two, 5, 0, 1, true), "and nothing else goes while it is down");
        assert!(may_start(third, 32, 9, 40, false) && !may_start(third, 32, 10, 10, false));
    }

    #[test]
    fn estimates_follow_what_was_seen() {
        let none = || std::iter::empty::<u64>();
        assert_eq!(restart_estimate_ms(none(), none(), 60_000), DEFAULT_RESTART_ESTIMATE_MS);
        assert_eq!(restart_estimate_ms([1_200, 3_400, 900].into_iter(), [20_000].into_iter(), 60_000), 3_400, "this run's own first");
        assert_eq!(restart_estimate_ms(none(), [2_000, 2_600].into_iter(), 60_000), 2_600, "then the last roll's");
        assert_eq!(restart_estimate_ms([90_000].into_iter(), none(), 60_000), 60_000);
        assert!(lease_is_ours(&lease_description("a@b")) && !lease_is_ours("flyctl deploy"));
    }
}
