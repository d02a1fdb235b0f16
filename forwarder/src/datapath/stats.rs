//! Reading the per-rule, per-CPU counters of the data path.

use crate::datapath::map_access::{self, MapReadError};
use aya::{
    maps::{MapData, PerCpuArray},
    Ebpf,
};
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
    pub fn rule_totals(&self, rule_id: u16) -> Result<Totals, MapReadError> {
        rule_totals(self.ebpf(), rule_id)
    }

    /// Sets a rule's counters to zero, when its id is given to a new rule.
    pub fn reset_rule_stats(&mut self, rule_id: u16) -> Result<(), MapReadError> {
        reset(self.ebpf_mut(), rule_id)
    }
}

fn rule_totals(ebpf: &Ebpf, rule_id: u16) -> Result<Totals, MapReadError> {
    let name = map_names::RULE_STATS;
    let stats: PerCpuArray<&MapData, RuleStats> =
        PerCpuArray::try_from(map_access::map(ebpf, name)?).map_err(map_access::of(name))?;
    let mut t = Totals::default();
    for cpu in stats.get(&(rule_id as u32), 0).map_err(map_access::of(name))?.iter() {
        for (sum, v) in t.0.iter_mut().zip(cpu.counters) {
            *sum += v;
        }
    }
    Ok(t)
}

fn reset(ebpf: &mut Ebpf, rule_id: u16) -> Result<(), MapReadError> {
    let name = map_names::RULE_STATS;
    let mut stats: PerCpuArray<&mut MapData, RuleStats> =
        PerCpuArray::try_from(map_access::map_mut(ebpf, name)?).map_err(map_access::of(name))?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapReadError::Cpus(name, e))?;
    let zeros = aya::maps::PerCpuValues::try_from(vec![RuleStats::default(); cpus])
        .map_err(|e| MapReadError::Cpus(name, e))?;
    stats.set(rule_id as u32, zeros, 0).map_err(map_access::of(name))
}
