//! `truth.json` equals a brute-force evaluation of each shape's `match_sql` (SPEC 4 semantics:
//! matched = rows of the query; unmatched = rows whose key is in no matched row) over the rows
//! read back from the files, written independently of the generator.

use std::collections::{HashMap, HashSet};

use kalla_datagen::{Format, Shape, Sides, Truth};

use crate::support::{Ledger, generate, invoices, payments};

/// What evaluating `match_sql` gives: the number of rows and the keys named by them.
struct Evaluated {
    rows: u64,
    invoice_keys: HashSet<i64>,
    payment_keys: HashSet<i64>,
}

impl Evaluated {
    fn new() -> Self {
        Evaluated { rows: 0, invoice_keys: HashSet::new(), payment_keys: HashSet::new() }
    }

    fn assert_equals(&self, truth: &Truth, invoices: &Ledger, payments: &Ledger) {
        let unmatched =
            |ledger: &Ledger, keys: &HashSet<i64>| ledger.ids.iter().filter(|id| !keys.contains(id)).count() as u64;
        assert_eq!(truth.rows, Sides { invoices: invoices.len() as u64, payments: payments.len() as u64 });
        assert_eq!(truth.matched, self.rows, "matched rows");
        assert_eq!(
            truth.unmatched,
            Sides {
                invoices: unmatched(invoices, &self.invoice_keys),
                payments: unmatched(payments, &self.payment_keys),
            },
            "unmatched"
        );
    }
}

fn by_reference(ledger: &Ledger) -> HashMap<&str, Vec<usize>> {
    let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
    for (row, reference) in ledger.references.iter().enumerate() {
        map.entry(reference.as_str()).or_default().push(row);
    }
    map
}

/// `tolerance_match_pct(a, b, 0.01)`, exactly, in cents.
fn within_one_percent(a: i64, b: i64) -> bool {
    (a - b).abs() * 100 <= a.abs().max(b.abs())
}

/// `... JOIN payments p ON i.reference = p.reference_number AND tolerance_match_pct(...)`.
fn one_to_one(invoices: &Ledger, payments: &Ledger) -> Evaluated {
    let index = by_reference(invoices);
    let mut result = Evaluated::new();
    for p in 0..payments.len() {
        for &i in index.get(payments.references[p].as_str()).into_iter().flatten() {
            if within_one_percent(invoices.amounts[i], payments.amounts[p]) {
                result.rows += 1;
                result.invoice_keys.insert(invoices.ids[i]);
                result.payment_keys.insert(payments.ids[p]);
            }
        }
    }
    result
}

/// `GROUP BY` the one side's key over the join on reference, `HAVING sum(many.amount) = one.amount`.
fn one_to_many(one: &Ledger, many: &Ledger) -> (u64, HashSet<i64>, HashSet<i64>) {
    let index = by_reference(many);
    let (mut rows, mut one_keys, mut many_keys) = (0, HashSet::new(), HashSet::new());
    for o in 0..one.len() {
        let Some(members) = index.get(one.references[o].as_str()) else { continue };
        if members.iter().map(|&m| many.amounts[m]).sum::<i64>() == one.amounts[o] {
            rows += 1;
            one_keys.insert(one.ids[o]);
            many_keys.extend(members.iter().map(|&m| many.ids[m]));
        }
    }
    (rows, one_keys, many_keys)
}

fn many_to_many(invoices: &Ledger, payments: &Ledger) -> Evaluated {
    fn groups(ledger: &Ledger) -> HashMap<&(i64, String), (i64, Vec<i64>)> {
        let mut map: HashMap<&(i64, String), (i64, Vec<i64>)> = HashMap::new();
        for (row, key) in ledger.groups.iter().enumerate() {
            let entry = map.entry(key).or_default();
            entry.0 += ledger.amounts[row];
            entry.1.push(ledger.ids[row]);
        }
        map
    }
    assert_eq!(invoices.groups.len(), invoices.len());
    assert_eq!(payments.groups.len(), payments.len());
    let paid = groups(payments);
    let mut result = Evaluated::new();
    for (key, (total, invoice_ids)) in groups(invoices) {
        if let Some((paid_total, payment_ids)) = paid.get(key)
            && *paid_total == total
        {
            result.rows += 1;
            result.invoice_keys.extend(invoice_ids);
            result.payment_keys.extend(payment_ids);
        }
    }
    result
}

fn check(shape: Shape, invoice_count: u64, payment_count: Option<u64>, seed: u64) -> Truth {
    let (dir, truth) = generate(shape, invoice_count, payment_count, seed, &[Format::Parquet]);
    let (invoices, payments) = (invoices(dir.path()), payments(dir.path()));
    assert_eq!(invoices.len() as u64, invoice_count, "exactly the invoices asked for");
    let evaluated = match shape {
        Shape::OneToOne => one_to_one(&invoices, &payments),
        Shape::Split => {
            let (rows, invoice_keys, payment_keys) = one_to_many(&invoices, &payments);
            Evaluated { rows, invoice_keys, payment_keys }
        }
        Shape::Batch => {
            let (rows, payment_keys, invoice_keys) = one_to_many(&payments, &invoices);
            Evaluated { rows, invoice_keys, payment_keys }
        }
        Shape::ManyToMany => many_to_many(&invoices, &payments),
    };
    evaluated.assert_equals(&truth, &invoices, &payments);
    truth
}

#[test]
fn one_to_one_truth_equals_a_brute_force_recount() {
    let truth = check(Shape::OneToOne, 40_000, None, 42);
    assert_eq!(truth.rows.payments, 38_000, "default payments = 95% of invoices");
    // Every category the data promises is present.
    for path in [
        "/payments/exact",
        "/payments/within_tolerance",
        "/payments/at_boundary",
        "/payments/near_miss",
        "/payments/orphan",
        "/duplicate_pairs/both_within",
        "/duplicate_pairs/one_outside",
        "/invoices/never_referenced",
    ] {
        assert!(truth.breakdown.pointer(path).and_then(|v| v.as_u64()).unwrap_or(0) > 0, "{path}: {}", truth.breakdown);
    }
}

#[test]
fn one_to_one_truth_holds_with_more_payments_than_invoices_and_with_empty_sides() {
    check(Shape::OneToOne, 5_000, Some(9_001), 3);
    check(Shape::OneToOne, 5_000, Some(1), 3);
    check(Shape::OneToOne, 0, Some(10), 3);
    check(Shape::OneToOne, 10, Some(0), 3);
}

#[test]
fn one_to_one_has_payments_exactly_at_and_one_cent_beyond_the_boundary() {
    let (dir, _) = generate(Shape::OneToOne, 40_000, None, 5, &[Format::Parquet]);
    let (invoices, payments) = (invoices(dir.path()), payments(dir.path()));
    let index = by_reference(&invoices);
    let (mut at_boundary, mut near_misses, mut duplicated) = (0, 0, 0);
    let mut seen = HashSet::new();
    for p in 0..payments.len() {
        let Some(rows) = index.get(payments.references[p].as_str()) else { continue };
        let (a, b) = (invoices.amounts[rows[0]], payments.amounts[p]);
        if (a - b).abs() * 100 == a.max(b) {
            at_boundary += 1;
        }
        if !within_one_percent(a, b) {
            // Every referenced payment that misses does so by one cent.
            assert!(within_one_percent(a, b - (b - a).signum()), "{a} vs {b} misses by more than a cent");
            near_misses += 1;
        }
        if !seen.insert(rows[0]) {
            duplicated += 1;
        }
    }
    assert!(at_boundary > 50 && near_misses > 500 && duplicated > 200, "{at_boundary} {near_misses} {duplicated}");
}

#[test]
fn payments_are_not_sorted_by_reference() {
    for shape in [Shape::OneToOne, Shape::Split, Shape::Batch] {
        let (dir, _) = generate(shape, 20_000, None, 9, &[Format::Parquet]);
        let refs = payments(dir.path()).references;
        let descents = refs.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(descents > refs.len() / 10, "{shape:?}: {descents} descents in {}", refs.len());
    }
}

#[test]
fn split_truth_equals_a_brute_force_recount() {
    let truth = check(Shape::Split, 40_000, None, 42);
    assert!(truth.matched > 0 && truth.unmatched.invoices > 0 && truth.unmatched.payments > 0);
    check(Shape::Split, 1, None, 1);
    check(Shape::Split, 0, None, 1);
}

#[test]
fn batch_truth_equals_a_brute_force_recount() {
    let truth = check(Shape::Batch, 40_000, None, 42);
    assert!(truth.matched > 0 && truth.unmatched.invoices > 0 && truth.unmatched.payments > 0);
    check(Shape::Batch, 7, None, 1);
    check(Shape::Batch, 0, None, 1);
}

#[test]
fn many_to_many_truth_equals_a_brute_force_recount() {
    let truth = check(Shape::ManyToMany, 40_000, None, 42);
    assert!(truth.matched > 0 && truth.unmatched.invoices > 0 && truth.unmatched.payments > 0);
    check(Shape::ManyToMany, 1, None, 1);
    check(Shape::ManyToMany, 0, None, 1);
}

#[test]
fn payments_option_is_refused_for_grouped_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let options = kalla_datagen::Options {
        shape: Shape::Split,
        invoices: 10,
        payments: Some(5),
        seed: 1,
        out: dir.path().to_path_buf(),
        formats: vec![Format::Parquet],
    };
    assert!(matches!(kalla_datagen::generate(&options), Err(kalla_datagen::Error::Options(_))));
}
