//! Key tracing: which output columns of `match_sql` carry each source's key columns.
//!
//! Unmatched rows are found by an anti join of a source against the keys present in the matched
//! output, so kallad must know, for every keyed source, which output columns hold its key. This
//! module walks the *unoptimized* logical plan (the optimizer preserves the output schema, so
//! column positions carry over to the plan that runs) and computes, for every output column, the
//! set of source columns it is a copy of.
//!
//! A column carries a key when it is the key column itself, renamed through aliases, CTEs,
//! subqueries, joins of any kind, DISTINCT, sorts, limits, filters, GROUP BY, or UNION when every
//! branch carries the same column. `array_agg(key)` carries a *list* of keys (1:N and N:1
//! matches); a composite key travels as `array_agg(struct(k1, k2))` (or `named_struct`) or as one
//! `array_agg` per key column of the same aggregate. Casts and other expressions break the trail
//! on purpose: a transformed value cannot be compared with the source's key exactly.

use datafusion::common::{JoinType, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan};
use std::collections::{BTreeSet, HashSet};

/// How an output column carries a source key column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Carrier {
    /// The column is the key value itself.
    Plain,
    /// The column is a list of key values (`array_agg(key)`); `group` identifies the aggregate
    /// whose lists are aligned element by element.
    List {
        /// Aggregate identity.
        group: String,
    },
    /// The column is a list of structs; this key column is the struct field `field`.
    StructList {
        /// The struct field name.
        field: String,
    },
}

/// One source column an output column is a copy of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// Lower-cased source alias (the table name in the plan).
    pub source: String,
    /// The source column name.
    pub column: String,
    /// How the value travels.
    pub carrier: Carrier,
}

/// Per output column, the origins it carries.
pub type Lineage = Vec<BTreeSet<Origin>>;

/// Where a source's key is found in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTrace {
    /// Each key column is a plain output column (indices in key order).
    Plain(Vec<usize>),
    /// One output column holds `array_agg(struct(...))`; the struct field for each key column.
    StructList {
        /// Output column index.
        column: usize,
        /// Field names in key order.
        fields: Vec<String>,
    },
    /// One `array_agg` output column per key column, all from one aggregate (indices in key order).
    Lists(Vec<usize>),
}

/// Computes the lineage of every output column of `plan`; `sources` are lower-cased aliases.
pub fn lineage(plan: &LogicalPlan, sources: &HashSet<String>) -> Lineage {
    let width = plan.schema().fields().len();
    let out = match plan {
        LogicalPlan::SubqueryAlias(s) => match source_of_alias(s.alias.table(), sources) {
            Some(table) => s
                .schema
                .fields()
                .iter()
                .map(|f| {
                    BTreeSet::from([Origin {
                        source: table.clone(),
                        column: f.name().clone(),
                        carrier: Carrier::Plain,
                    }])
                })
                .collect(),
            None => lineage(&s.input, sources),
        },
        LogicalPlan::Projection(p) => {
            let input = lineage(&p.input, sources);
            p.expr.iter().map(|e| trace_expr(e, &p.input, &input)).collect()
        }
        LogicalPlan::Filter(f) => lineage(&f.input, sources),
        LogicalPlan::Sort(s) => lineage(&s.input, sources),
        LogicalPlan::Limit(l) => lineage(&l.input, sources),
        LogicalPlan::Repartition(r) => lineage(&r.input, sources),
        LogicalPlan::Subquery(s) => lineage(&s.subquery, sources),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => lineage(input, sources),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::On(on)) => {
            let input = lineage(&on.input, sources);
            on.select_expr.iter().map(|e| trace_expr(e, &on.input, &input)).collect()
        }
        LogicalPlan::Join(j) => {
            let left = lineage(&j.left, sources);
            let right = lineage(&j.right, sources);
            match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    left.into_iter().chain(right).collect()
                }
                JoinType::LeftSemi | JoinType::LeftAnti => left,
                JoinType::RightSemi | JoinType::RightAnti => right,
                JoinType::LeftMark => left.into_iter().chain(empty(1)).collect(),
                _ => empty(width),
            }
        }
        LogicalPlan::Window(w) => {
            let mut input = lineage(&w.input, sources);
            input.extend(empty(w.window_expr.len()));
            input
        }
        LogicalPlan::Aggregate(agg) => {
            let input = lineage(&agg.input, sources);
            let group_id = format!("aggregate@{:p}", agg as *const _);
            let mut out: Lineage = Vec::with_capacity(width);
            for g in &agg.group_expr {
                match g {
                    Expr::GroupingSet(set) => out.extend(empty(set.distinct_expr().len())),
                    e => out.push(trace_expr(e, &agg.input, &input)),
                }
            }
            if out.len() + agg.aggr_expr.len() < width {
                // GROUPING SETS add an internal grouping id column.
                out.extend(empty(width - out.len() - agg.aggr_expr.len()));
            }
            for e in &agg.aggr_expr {
                out.push(trace_aggregate(e, &agg.input, &input, &group_id));
            }
            out
        }
        LogicalPlan::Union(u) => {
            let branches: Vec<Lineage> = u.inputs.iter().map(|i| lineage(i, sources)).collect();
            (0..width)
                .map(|col| {
                    let mut iter = branches.iter().map(|b| b.get(col).cloned().unwrap_or_default());
                    let first = iter.next().unwrap_or_default();
                    iter.fold(first, |acc, next| acc.intersection(&next).cloned().collect())
                })
                .collect()
        }
        _ => empty(width),
    };
    if out.len() == width { out } else { empty(width) }
}

/// The prefix of the alias that marks a source's own plan (see [`source_marker`]).
pub const SOURCE_MARKER_PREFIX: &str = "__kalla_source_";

/// The alias the engine wraps around each source's plan. The SQL planner inlines the source's
/// view into `match_sql`'s plan, and this marker is how lineage recognises where a source's rows
/// enter, whatever CTE or alias names the query uses.
pub fn source_marker(table: &str) -> String {
    format!("{SOURCE_MARKER_PREFIX}{table}")
}

fn source_of_alias(alias: &str, sources: &HashSet<String>) -> Option<String> {
    let table = alias.strip_prefix(SOURCE_MARKER_PREFIX)?;
    sources.contains(table).then(|| table.to_string())
}

fn empty(n: usize) -> Lineage {
    vec![BTreeSet::new(); n]
}

/// The origins of a plain (non-aggregate) expression over `input`.
fn trace_expr(e: &Expr, input: &LogicalPlan, input_lineage: &Lineage) -> BTreeSet<Origin> {
    match e {
        Expr::Alias(a) => trace_expr(&a.expr, input, input_lineage),
        Expr::Column(c) => match input.schema().index_of_column(c) {
            Ok(i) => input_lineage.get(i).cloned().unwrap_or_default(),
            Err(_) => BTreeSet::new(),
        },
        _ => BTreeSet::new(),
    }
}

/// The origins of an aggregate expression: only `array_agg` of a key (or of a struct of keys).
fn trace_aggregate(e: &Expr, input: &LogicalPlan, input_lineage: &Lineage, group_id: &str) -> BTreeSet<Origin> {
    let af = match e {
        Expr::Alias(a) => return trace_aggregate(&a.expr, input, input_lineage, group_id),
        Expr::AggregateFunction(af) => af,
        _ => return BTreeSet::new(),
    };
    if !af.func.name().eq_ignore_ascii_case("array_agg") || af.params.args.len() != 1 {
        return BTreeSet::new();
    }
    let arg = &af.params.args[0];
    // Lists are aligned element by element only when built from the same rows in the same order.
    let group = format!(
        "{group_id}|distinct={}|filter={:?}|order={:?}",
        af.params.distinct,
        af.params.filter.as_ref().map(|f| f.to_string()),
        af.params.order_by.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    let group = if af.params.distinct { format!("{group}|{}", arg) } else { group };
    let plain_origins = |expr: &Expr| -> Vec<Origin> {
        trace_expr(expr, input, input_lineage).into_iter().filter(|o| o.carrier == Carrier::Plain).collect()
    };
    match arg {
        Expr::ScalarFunction(f) if f.func.name() == "struct" => {
            let mut out = BTreeSet::new();
            for (i, a) in f.args.iter().enumerate() {
                for o in plain_origins(a) {
                    out.insert(Origin { carrier: Carrier::StructList { field: format!("c{i}") }, ..o });
                }
            }
            out
        }
        Expr::ScalarFunction(f) if f.func.name() == "named_struct" => {
            let mut out = BTreeSet::new();
            for pair in f.args.chunks(2) {
                if let [Expr::Literal(ScalarValue::Utf8(Some(name)), _), value] = pair {
                    for o in plain_origins(value) {
                        out.insert(Origin { carrier: Carrier::StructList { field: name.clone() }, ..o });
                    }
                }
            }
            out
        }
        other => plain_origins(other)
            .into_iter()
            .map(|o| Origin { carrier: Carrier::List { group: group.clone() }, ..o })
            .collect(),
    }
}

/// Finds where the key `key` of `source` (lower-cased alias) travels in the output.
pub fn trace_key(lineage: &Lineage, source: &str, key: &[String]) -> Option<KeyTrace> {
    let find = |pred: &dyn Fn(&Origin) -> bool| lineage.iter().position(|set| set.iter().any(pred));
    // 1. Every key column as a plain column.
    let plain: Option<Vec<usize>> = key
        .iter()
        .map(|k| find(&|o: &Origin| o.source == source && &o.column == k && o.carrier == Carrier::Plain))
        .collect();
    if let Some(indices) = plain {
        return Some(KeyTrace::Plain(indices));
    }
    // 2. One column of structs holding every key column.
    for (i, set) in lineage.iter().enumerate() {
        let fields: Option<Vec<String>> = key
            .iter()
            .map(|k| {
                set.iter().find_map(|o| match &o.carrier {
                    Carrier::StructList { field } if o.source == source && &o.column == k => Some(field.clone()),
                    _ => None,
                })
            })
            .collect();
        if let Some(fields) = fields {
            return Some(KeyTrace::StructList { column: i, fields });
        }
    }
    // 3. One list per key column, all from the same aggregate.
    let mut groups: BTreeSet<String> = BTreeSet::new();
    for set in lineage {
        for o in set {
            if let Carrier::List { group } = &o.carrier
                && o.source == source
            {
                groups.insert(group.clone());
            }
        }
    }
    for group in groups {
        let lists: Option<Vec<usize>> = key
            .iter()
            .map(|k| {
                find(&|o: &Origin| {
                    o.source == source && &o.column == k && o.carrier == Carrier::List { group: group.clone() }
                })
            })
            .collect();
        if let Some(indices) = lists {
            return Some(KeyTrace::Lists(indices));
        }
    }
    None
}
