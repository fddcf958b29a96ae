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
//!
//! A query can read one source more than once (a self-join matching a ledger's reversals against
//! its entries). Every origin records which reference to the source it comes from, a composite
//! key is only ever assembled from columns of one reference, and every reference that carries the
//! whole key counts: a source row is matched when its key appears in any of them.

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
    /// Which reference to the source in the query (`r<n>`, numbered in plan order; a UNION's
    /// output joins its branches' references, `r1+r4`).
    pub instance: String,
}

/// Per output column, the origins it carries.
pub type Lineage = Vec<BTreeSet<Origin>>;

/// Where a source's key is found in the output: every way the whole key travels (one per
/// reference to the source that carries it, and per form it takes there), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTrace {
    /// The carriers, in output column order of their first column.
    pub carriers: Vec<KeyCarrier>,
}

impl KeyTrace {
    /// The number of key columns.
    pub fn width(&self) -> usize {
        match self.carriers.first() {
            Some(KeyCarrier::Plain(idx) | KeyCarrier::Lists(idx)) => idx.len(),
            Some(KeyCarrier::StructList { fields, .. }) => fields.len(),
            None => 0,
        }
    }

    /// The output columns that carry the key, each once, in output order.
    pub fn columns(&self) -> Vec<usize> {
        let mut columns: Vec<usize> = self
            .carriers
            .iter()
            .flat_map(|c| match c {
                KeyCarrier::Plain(idx) | KeyCarrier::Lists(idx) => idx.clone(),
                KeyCarrier::StructList { column, .. } => vec![*column],
            })
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }
}

/// One way a source's whole key travels in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCarrier {
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
    walk(plan, sources, &mut 0)
}

/// [`lineage`]; `references` counts the references to sources met so far (each one a new
/// instance, even where the planner shares one subtree between two of them).
fn walk(plan: &LogicalPlan, sources: &HashSet<String>, references: &mut usize) -> Lineage {
    let width = plan.schema().fields().len();
    let out = match plan {
        LogicalPlan::SubqueryAlias(s) => match source_of_alias(s.alias.table(), sources) {
            Some(table) => {
                *references += 1;
                let instance = format!("r{references}");
                s.schema
                    .fields()
                    .iter()
                    .map(|f| {
                        BTreeSet::from([Origin {
                            source: table.clone(),
                            column: f.name().clone(),
                            carrier: Carrier::Plain,
                            instance: instance.clone(),
                        }])
                    })
                    .collect()
            }
            None => walk(&s.input, sources, references),
        },
        LogicalPlan::Projection(p) => {
            let input = walk(&p.input, sources, references);
            p.expr.iter().map(|e| trace_expr(e, &p.input, &input)).collect()
        }
        LogicalPlan::Filter(f) => walk(&f.input, sources, references),
        LogicalPlan::Sort(s) => walk(&s.input, sources, references),
        LogicalPlan::Limit(l) => walk(&l.input, sources, references),
        LogicalPlan::Repartition(r) => walk(&r.input, sources, references),
        LogicalPlan::Subquery(s) => walk(&s.subquery, sources, references),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => walk(input, sources, references),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::On(on)) => {
            let input = walk(&on.input, sources, references);
            on.select_expr.iter().map(|e| trace_expr(e, &on.input, &input)).collect()
        }
        LogicalPlan::Join(j) => {
            let left = walk(&j.left, sources, references);
            let right = walk(&j.right, sources, references);
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
            let mut input = walk(&w.input, sources, references);
            input.extend(empty(w.window_expr.len()));
            input
        }
        LogicalPlan::Aggregate(agg) => {
            let input = walk(&agg.input, sources, references);
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
            let branches: Vec<Lineage> = u.inputs.iter().map(|i| walk(i, sources, references)).collect();
            (0..width)
                .map(|col| {
                    let mut iter = branches.iter().map(|b| b.get(col).cloned().unwrap_or_default());
                    let first = iter.next().unwrap_or_default();
                    // A column carries a source column when every branch carries it; its
                    // reference is the branches' references together.
                    iter.fold(first, |acc, next| {
                        acc.iter()
                            .flat_map(|a| {
                                next.iter()
                                    .filter(|b| a.source == b.source && a.column == b.column && a.carrier == b.carrier)
                                    .map(|b| Origin { instance: format!("{}+{}", a.instance, b.instance), ..a.clone() })
                            })
                            .collect()
                    })
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

/// Finds where the key `key` of `source` (lower-cased alias) travels in the output: for each
/// reference to the source, the key as plain columns, as one column of structs holding every key
/// column, or as one list per key column from the same aggregate.
pub fn trace_key(lineage: &Lineage, source: &str, key: &[String]) -> Option<KeyTrace> {
    let instances: BTreeSet<&str> =
        lineage.iter().flatten().filter(|o| o.source == source).map(|o| o.instance.as_str()).collect();
    let mut carriers = Vec::new();
    for instance in instances {
        let ours = |o: &Origin, k: &String| o.source == source && o.instance == instance && &o.column == k;
        let find = |pred: &dyn Fn(&Origin) -> bool| lineage.iter().position(|set| set.iter().any(pred));
        // Every key column as a plain column.
        let plain: Option<Vec<usize>> =
            key.iter().map(|k| find(&|o: &Origin| ours(o, k) && o.carrier == Carrier::Plain)).collect();
        if let Some(indices) = plain {
            carriers.push(KeyCarrier::Plain(indices));
        }
        // One column of structs holding every key column.
        for (i, set) in lineage.iter().enumerate() {
            let fields: Option<Vec<String>> = key
                .iter()
                .map(|k| {
                    set.iter().find_map(|o| match &o.carrier {
                        Carrier::StructList { field } if ours(o, k) => Some(field.clone()),
                        _ => None,
                    })
                })
                .collect();
            if let Some(fields) = fields {
                carriers.push(KeyCarrier::StructList { column: i, fields });
            }
        }
        // One list per key column, all from the same aggregate.
        let groups: BTreeSet<&String> = lineage
            .iter()
            .flatten()
            .filter(|o| o.source == source && o.instance == instance)
            .filter_map(|o| match &o.carrier {
                Carrier::List { group } => Some(group),
                _ => None,
            })
            .collect();
        for group in groups {
            let lists: Option<Vec<usize>> = key
                .iter()
                .map(|k| {
                    find(&|o: &Origin| matches!(&o.carrier, Carrier::List { group: g } if g == group) && ours(o, k))
                })
                .collect();
            if let Some(indices) = lists {
                carriers.push(KeyCarrier::Lists(indices));
            }
        }
    }
    let first_column = |c: &KeyCarrier| match c {
        KeyCarrier::Plain(idx) | KeyCarrier::Lists(idx) => idx.first().copied().unwrap_or(0),
        KeyCarrier::StructList { column, .. } => *column,
    };
    carriers.sort_by_key(first_column);
    carriers.dedup();
    (!carriers.is_empty()).then_some(KeyTrace { carriers })
}
