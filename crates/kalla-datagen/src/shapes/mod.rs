//! The four shapes, and the runner that writes a shape's two tables on two threads.
//!
//! A shape emits its invoices and its payments independently (each side regenerates what it
//! needs from the other through [`crate::random::Streams`]). While emitting, each side tallies
//! what it knows about the outcome; [`Generator::outcome`] combines the two tallies into the
//! matched and unmatched counts of `truth.json`.

mod batch;
mod many_to_many;
mod one_to_one;
mod split;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::random;
use crate::table::{Reference, Row, Table, TableWriter};
use crate::truth::{Sides, Truth};
use crate::{Error, Options, Shape};

/// How one shape generates its tables.
pub(crate) trait Generator: Sync {
    /// What the invoice side counts while emitting.
    type InvoiceTally: Send;
    /// What the payment side counts while emitting.
    type PaymentTally: Send;

    /// Emits every invoice, in file order.
    fn invoices(&self, out: &mut TableWriter) -> Result<Self::InvoiceTally, Error>;

    /// Emits every payment, in file order.
    fn payments(&self, out: &mut TableWriter) -> Result<Self::PaymentTally, Error>;

    /// The expected result of the shape's `match_sql` over what was emitted.
    fn outcome(&self, invoices: Self::InvoiceTally, payments: Self::PaymentTally, rows: Sides) -> Outcome;
}

/// The truth apart from what every shape shares.
pub(crate) struct Outcome {
    pub matched: u64,
    pub unmatched: Sides,
    pub breakdown: Value,
}

/// A payment whose reference names no invoice (key `payment_id`), from one of `customers` payers.
pub(crate) fn orphan_payment(rng: &mut ChaCha8Rng, customers: u64, payment_id: i64) -> Row {
    let day = random::day(rng, 0);
    Row {
        customer: rng.random_range(1..=customers),
        amount: random::amount(rng),
        currency: random::currency(rng),
        day,
        reference: Reference::Orphan(payment_id as u64),
        at: random::time_on(rng, day),
        group: None,
    }
}

/// How many groups, of the sizes `size(g)` draws for group `g`, it takes to hold `invoices` rows,
/// and the size of the last one (cut to fit).
pub(crate) fn groups_covering(invoices: u64, mut size: impl FnMut(u64) -> u64) -> (u64, u64) {
    let (mut groups, mut total, mut last) = (0, 0, 0);
    while total < invoices {
        last = size(groups).min(invoices - total);
        total += last;
        groups += 1;
    }
    (groups, last)
}

/// Writes `options.shape`'s tables and returns their truth.
pub(crate) fn write_tables(options: &Options) -> Result<Truth, Error> {
    match options.shape {
        Shape::OneToOne => {
            let payments = options.payments.unwrap_or((u128::from(options.invoices) * 95 / 100) as u64);
            run(&one_to_one::OneToOne::new(options.seed, options.invoices, payments), options)
        }
        Shape::Split => run(&split::Split::new(options.seed, options.invoices), options),
        Shape::Batch => run(&batch::Batch::new(options.seed, options.invoices), options),
        Shape::ManyToMany => run(&many_to_many::ManyToMany::new(options.seed, options.invoices), options),
    }
}

fn run<G: Generator>(generator: &G, options: &Options) -> Result<Truth, Error> {
    let group_columns = options.shape.has_group_columns();
    let open = |table| TableWriter::create(&options.out, table, group_columns, &options.formats);
    let (invoices, payments) = std::thread::scope(|scope| {
        let payments = scope.spawn(|| {
            let mut out = open(Table::Payments)?;
            let tally = generator.payments(&mut out)?;
            Ok::<_, Error>((tally, out.finish()?))
        });
        let invoices = (|| {
            let mut out = open(Table::Invoices)?;
            let tally = generator.invoices(&mut out)?;
            Ok::<_, Error>((tally, out.finish()?))
        })();
        (invoices, payments.join())
    });
    let (invoice_tally, invoice_rows) = invoices?;
    let (payment_tally, payment_rows) = payments.map_err(|_| Error::Panicked("payments"))??;
    let rows = Sides { invoices: invoice_rows, payments: payment_rows };
    let outcome = generator.outcome(invoice_tally, payment_tally, rows);
    Ok(Truth {
        shape: options.shape.name().to_string(),
        seed: options.seed,
        rows,
        matched: outcome.matched,
        unmatched: outcome.unmatched,
        breakdown: outcome.breakdown,
    })
}
