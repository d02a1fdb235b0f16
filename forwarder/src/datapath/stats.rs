//! Reading the per-rule, per-CPU counters of the data path.

use crate::datapath::handles::{of, MapAccessError, RuleStatsMap};
use forwarder_common::{map_names, Counter, RuleStats, COUNTERS};

/// Counters of one rule, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals(pub [u64; COUNTERS]);

impl Totals {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// `name=value` pairs of the non-zero counters, for logs.
    pub fn summary(&self) -> String {
        Counter::ALL
            .iter()
            .filter(|c| self.get(**c) != 0)
            .map(|c| format!("{}={}", c.name(), self.get(*c)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl crate::datapath::Datapath {
    /// A rule's counters, summed over CPUs.
    pub fn rule_totals(&self, rule_id: u16) -> Result<Totals, MapAccessError> {
        self.maps.rule_stats.totals(rule_id)
    }

    /// Sets a rule's counters to zero, when its id is given to a new rule.
    pub fn reset_rule_stats(&mut self, rule_id: u16) -> Result<(), MapAccessError> {
        self.maps.rule_stats.reset(rule_id)
    }
}

impl RuleStatsMap {
    /// A rule's counters, summed over CPUs.
    pub fn totals(&self, rule_id: u16) -> Result<Totals, MapAccessError> {
        let name = map_names::RULE_STATS;
        let mut t = Totals::default();
        for cpu in self.0.get(&(rule_id as u32), 0).map_err(of(name))?.iter() {
            for (sum, v) in t.0.iter_mut().zip(cpu.counters) {
                *sum += v;
            }
        }
        Ok(t)
    }

    /// Sets a rule's counters to zero on every CPU.
    pub fn reset(&mut self, rule_id: u16) -> Result<(), MapAccessError> {
        let name = map_names::RULE_STATS;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapAccessError::Cpus(name, e))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![RuleStats::default(); cpus])
            .map_err(|e| MapAccessError::Cpus(name, e))?;
        self.0.set(rule_id as u32, zeros, 0).map_err(of(name))
    }
}
