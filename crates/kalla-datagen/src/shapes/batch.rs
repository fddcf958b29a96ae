//! Batch (N:1): one payment pays 10–50 invoices that carry the batch's reference.
//!
//! Batch `b` is drawn from stream `b`: its size first (so sizes can be summed without drawing the
//! rest), then its fate — 88% paid by one payment of exactly the invoices' sum, 6% by a payment
//! off by 1–99 cents, 6% unpaid — then its invoices. After 3% of batches an orphan payment
//! follows. Batches are added until there are `N` invoices; the last one is cut to fit (so it may
//! be smaller than 10). Payments are written in a seeded permuted order of the batches.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use super::{Generator, Outcome, groups_covering, orphan_payment};
use crate::random::{self, Domain, Permutation, Streams};
use crate::table::{Reference, Row, TableWriter};
use crate::truth::Sides;

pub(crate) struct Batch {
    streams: Streams,
    customers: u64,
    batches: u64,
    /// The size of the last batch, cut so that the sizes sum to `invoices`.
    last_size: u64,
    /// The payment side visits batch `order.apply(t)` at step `t`.
    order: Permutation,
    /// Batch `b`'s reference is `BAT-<codes.apply(b)>`.
    codes: Permutation,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Paid,
    OffByCents,
    Unpaid,
}

const PAYMENT_DELAY_DAYS: i32 = 15;
/// Invoices of a batch are dated within this many days of each other.
const BATCH_SPAN_DAYS: i32 = 30;

fn draw_size(rng: &mut ChaCha8Rng) -> u64 {
    rng.random_range(10..=50)
}

#[derive(Default, Serialize)]
pub(crate) struct InvoiceTally {
    in_paid_batches: u64,
    in_off_by_cents_batches: u64,
    in_unpaid_batches: u64,
}

#[derive(Default, Serialize)]
pub(crate) struct PaymentTally {
    paid_exactly: u64,
    off_by_cents: u64,
    orphan: u64,
    batches_unpaid: u64,
}

/// One batch: its invoices (without keys) and what the payment side needs.
struct Drawn {
    fate: Fate,
    invoices: Vec<Row>,
    rng: ChaCha8Rng,
}

impl Batch {
    pub(crate) fn new(seed: u64, invoices: u64) -> Self {
        let streams = Streams::new(seed);
        let (batches, last_size) = groups_covering(invoices, |b| draw_size(&mut streams.rng(Domain::Group, b)));
        let mut plan = streams.rng(Domain::Plan, 0);
        let order = Permutation::new(batches, &mut plan);
        let codes = Permutation::new(batches, &mut plan);
        Batch { streams, customers: (invoices / 200).max(1), batches, last_size, order, codes }
    }

    fn draw(&self, b: u64) -> Drawn {
        let mut rng = self.streams.rng(Domain::Group, b);
        let drawn_size = draw_size(&mut rng);
        let size = if b + 1 == self.batches { self.last_size } else { drawn_size };
        let fate = match rng.random_range(0..1000u32) {
            0..880 => Fate::Paid,
            880..940 => Fate::OffByCents,
            _ => Fate::Unpaid,
        };
        let customer = rng.random_range(1..=self.customers);
        let currency = random::currency(&mut rng);
        let first_day = random::day(&mut rng, BATCH_SPAN_DAYS + PAYMENT_DELAY_DAYS);
        let reference = Reference::Batch(self.codes.apply(b));
        let invoices = (0..size)
            .map(|_| {
                let day = first_day + rng.random_range(0..BATCH_SPAN_DAYS);
                let at = random::time_on(&mut rng, day);
                Row { customer, amount: random::amount(&mut rng), currency, day, reference, at, group: None }
            })
            .collect();
        Drawn { fate, invoices, rng }
    }
}

impl Generator for Batch {
    type InvoiceTally = InvoiceTally;
    type PaymentTally = PaymentTally;

    fn invoices(&self, out: &mut TableWriter) -> Result<InvoiceTally, crate::Error> {
        let mut tally = InvoiceTally::default();
        for b in 0..self.batches {
            let drawn = self.draw(b);
            for invoice in &drawn.invoices {
                out.push(invoice)?;
            }
            let size = drawn.invoices.len() as u64;
            match drawn.fate {
                Fate::Paid => tally.in_paid_batches += size,
                Fate::OffByCents => tally.in_off_by_cents_batches += size,
                Fate::Unpaid => tally.in_unpaid_batches += size,
            }
        }
        Ok(tally)
    }

    fn payments(&self, out: &mut TableWriter) -> Result<PaymentTally, crate::Error> {
        let mut tally = PaymentTally::default();
        for step in 0..self.batches {
            let Drawn { fate, invoices, mut rng } = self.draw(self.order.apply(step));
            let Some(first) = invoices.first() else { continue };
            if fate == Fate::Unpaid {
                tally.batches_unpaid += 1;
            } else {
                let sum: i64 = invoices.iter().map(|i| i.amount).sum();
                let amount = match fate {
                    Fate::OffByCents => sum + random::cents_off(&mut rng, sum),
                    _ => sum,
                };
                let last_day = invoices.iter().map(|i| i.day).max().unwrap_or(first.day);
                let day = last_day + rng.random_range(1..=PAYMENT_DELAY_DAYS);
                let at = random::time_on(&mut rng, day);
                out.push(&Row { amount, day, at, ..*first })?;
                match fate {
                    Fate::Paid => tally.paid_exactly += 1,
                    _ => tally.off_by_cents += 1,
                }
            }
            if rng.random_range(0..1000u32) < 30 {
                out.push(&orphan_payment(&mut rng, self.customers, out.next_id()))?;
                tally.orphan += 1;
            }
        }
        Ok(tally)
    }

    fn outcome(&self, i: InvoiceTally, p: PaymentTally, rows: Sides) -> Outcome {
        // One matched row per exactly paid batch; its invoices are in that row's array.
        Outcome {
            matched: p.paid_exactly,
            unmatched: Sides { invoices: rows.invoices - i.in_paid_batches, payments: rows.payments - p.paid_exactly },
            breakdown: json!({ "batches": self.batches, "invoices": i, "payments": p }),
        }
    }
}
