//! `ct_settle`, the aggregate that settles each conversion's reports inside the report's
//! query, with [`settle`](super::settle).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use super::{Reported, settle};

/// The name reports call [`SettleUdaf`] by.
pub const SETTLE: &str = "ct_settle";

/// The aggregate `ct_settle(entry)`: [`settle`](super::settle) over one conversion's [`Reported`] entries,
/// as text ([`Settled::encode`](super::Settled::encode)). The entries carry their payouts (the report's SQL fills in
/// the default ones) and no sent status. Each group keeps its reports parsed, and says how
/// much memory they take, so the aggregate is accounted at its size.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SettleUdaf {
    signature: Signature,
}

impl Default for SettleUdaf {
    fn default() -> Self {
        SettleUdaf {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SettleUdaf {
    fn name(&self) -> &str {
        SETTLE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(&self, _: AccumulatorArgs) -> datafusion::error::Result<Box<dyn Accumulator>> {
        Ok(Box::<Settling>::default())
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _: AccumulatorArgs,
    ) -> datafusion::error::Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::<SettlingGroups>::default())
    }
}

/// Every group's reports at once: what a `GROUP BY` over a million conversions wants.
#[derive(Debug, Default)]
struct SettlingGroups {
    groups: Vec<Vec<Reported>>,
    /// Reports held, and the bytes of their strings.
    reports: usize,
    text: usize,
}

impl SettlingGroups {
    fn add(&mut self, group: usize, entry: &str) -> datafusion::error::Result<()> {
        let r = Reported::parse(entry).ok_or_else(|| {
            DataFusionError::Execution(format!("{SETTLE}: not a report entry: {entry:?}"))
        })?;
        self.reports += 1;
        self.text += r.event_id.capacity() + r.sent.capacity();
        self.groups[group].push(r);
        Ok(())
    }

    /// The groups `emit_to` asks for, no longer held.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<Reported>> {
        let taken = emit_to.take_needed(&mut self.groups);
        for r in taken.iter().flatten() {
            self.reports -= 1;
            self.text -= r.event_id.capacity() + r.sent.capacity();
        }
        taken
    }
}

impl GroupsAccumulator for SettlingGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> datafusion::error::Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let Some(a) = values.first() else {
            return Ok(());
        };
        let entries = a.as_string::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) || entries.is_null(i) {
                continue;
            }
            self.add(g, entries.value(i))?;
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> datafusion::error::Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let Some(a) = values.first() else {
            return Ok(());
        };
        let states = a.as_string::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            if states.is_null(i) {
                continue;
            }
            for entry in states.value(i).split('\n').filter(|e| !e.is_empty()) {
                self.add(g, entry)?;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> datafusion::error::Result<ArrayRef> {
        let out: StringArray = self
            .take(emit_to)
            .iter_mut()
            .map(|reports| settle(reports, |_| 0).map(|x| x.encode()))
            .collect();
        Ok(Arc::new(out))
    }

    fn state(&mut self, emit_to: EmitTo) -> datafusion::error::Result<Vec<ArrayRef>> {
        let out: StringArray = self
            .take(emit_to)
            .iter()
            .map(|reports| Some(encoded(reports)))
            .collect();
        Ok(vec![Arc::new(out)])
    }

    /// A report's entry is the state of a group of one.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> datafusion::error::Result<Vec<ArrayRef>> {
        let Some(a) = values.first() else {
            return Ok(Vec::new());
        };
        let entries = a.as_string::<i32>();
        let out: StringArray = (0..entries.len())
            .map(|i| {
                let kept = opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
                (kept && !entries.is_null(i)).then(|| entries.value(i))
            })
            .collect();
        Ok(vec![Arc::new(out)])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Vec<Reported>>()
            + self.reports * std::mem::size_of::<Reported>()
            + self.text
    }
}

/// One conversion's reports, gathered: the groups' accumulator with a single group, for
/// where DataFusion wants a plain [`Accumulator`] (no `GROUP BY`).
#[derive(Debug, Default)]
struct Settling(SettlingGroups);

impl Settling {
    /// Its one group.
    fn reports(&mut self) -> &mut Vec<Reported> {
        self.0.groups.resize_with(1, Vec::new);
        &mut self.0.groups[0]
    }
}

impl Accumulator for Settling {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::error::Result<()> {
        let rows = values.first().map_or(0, |a| a.len());
        self.0.update_batch(values, &vec![0; rows], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::error::Result<()> {
        let rows = states.first().map_or(0, |a| a.len());
        self.0.merge_batch(states, &vec![0; rows], 1)
    }

    fn state(&mut self) -> datafusion::error::Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Utf8(Some(encoded(self.reports())))])
    }

    fn evaluate(&mut self) -> datafusion::error::Result<ScalarValue> {
        Ok(ScalarValue::Utf8(
            settle(self.reports(), |_| 0).map(|x| x.encode()),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }
}

/// A group's state: its reports' entries, a line each.
fn encoded(reports: &[Reported]) -> String {
    let text: Vec<String> = reports.iter().map(Reported::encode).collect();
    text.join("\n")
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The one-group accumulator (no `GROUP BY`) and the groups' one settle alike.
    #[tokio::test]
    async fn both_accumulators_settle_the_same() {
        let ctx = SessionContext::new();
        ctx.register_udaf(AggregateUDF::from(SettleUdaf::default()));
        let rows = "(VALUES ('c1', '01|0|S|a|10|'), ('c1', '02|0|B|a|30|'), \
                    ('c2', '03|0|L|r|2|'), ('c2', '04|0|R|r||'))";
        let answer = |sql: String| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let mut out: Vec<String> = batches
                    .iter()
                    .flat_map(|b| {
                        let a = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                        (0..a.len())
                            .map(|i| a.as_string::<i32>().value(i).to_owned())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                out.sort();
                out
            }
        };
        let one = answer(format!(
            "SELECT {SETTLE}(e) FROM {rows} AS t(k, e) WHERE k = 'c1'"
        ))
        .await;
        let grouped = answer(format!(
            "SELECT {SETTLE}(e) FROM {rows} AS t(k, e) GROUP BY k"
        ))
        .await;
        assert_eq!(one, ["B|1|40|0|0|0|1|0|0"]);
        assert_eq!(grouped, ["B|1|40|0|0|0|1|0|0", "R|1|0|0|0|0|0|1|0"]);
    }
}
