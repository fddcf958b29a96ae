//! Split (1:N): an invoice is paid by 2–5 payments carrying its reference and summing to it.
//!
//! Group `k` is invoice `k` and its payments, drawn from stream `k`: 85% are paid exactly, 7% by
//! payments whose sum is off by 1–99 cents, 8% are never paid; after 3% of groups an orphan
//! payment (a reference naming no invoice) follows. Payments are written group by group in a
//! seeded permuted order of the invoices.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use super::{Generator, Outcome, orphan_payment};
use crate::random::{self, Domain, Permutation, Streams};
use crate::table::{Reference, Row, TableWriter};
use crate::truth::Sides;

pub(crate) struct Split {
    streams: Streams,
    invoices: u64,
    customers: u64,
    /// The payment side visits invoice `order.apply(t)` at step `t`.
    order: Permutation,
    /// Invoice `k`'s reference is `INV-<codes.apply(k)>`.
    codes: Permutation,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Paid,
    OffByCents,
    Unpaid,
}

const PAYMENT_DELAY_DAYS: i32 = 45;

#[derive(Default, Serialize)]
pub(crate) struct InvoiceTally {
    paid: u64,
    off_by_cents: u64,
    unpaid: u64,
}

#[derive(Default, Serialize)]
pub(crate) struct PaymentTally {
    in_paid_groups: u64,
    in_off_by_cents_groups: u64,
    orphan: u64,
}

impl Split {
    pub(crate) fn new(seed: u64, invoices: u64) -> Self {
        let streams = Streams::new(seed);
        let mut plan = streams.rng(Domain::Plan, 0);
        let order = Permutation::new(invoices, &mut plan);
        let codes = Permutation::new(invoices, &mut plan);
        Split { streams, invoices, customers: (invoices / 20).max(1), order, codes }
    }

    /// Invoice `k`, its fate, and the stream positioned for the payment side's draws.
    fn invoice(&self, k: u64) -> (Row, Fate, ChaCha8Rng) {
        let mut rng = self.streams.rng(Domain::Group, k);
        let customer = rng.random_range(1..=self.customers);
        let amount = random::amount(&mut rng);
        let currency = random::currency(&mut rng);
        let day = random::day(&mut rng, PAYMENT_DELAY_DAYS);
        let at = random::time_on(&mut rng, day);
        let reference = Reference::Invoice(self.codes.apply(k));
        let fate = match rng.random_range(0..1000u32) {
            0..850 => Fate::Paid,
            850..920 => Fate::OffByCents,
            _ => Fate::Unpaid,
        };
        (Row { customer, amount, currency, day, reference, at, group: None }, fate, rng)
    }
}

impl Generator for Split {
    type InvoiceTally = InvoiceTally;
    type PaymentTally = PaymentTally;

    fn invoices(&self, out: &mut TableWriter) -> Result<InvoiceTally, crate::Error> {
        let mut tally = InvoiceTally::default();
        for k in 0..self.invoices {
            let (invoice, fate, _) = self.invoice(k);
            out.push(&invoice)?;
            match fate {
                Fate::Paid => tally.paid += 1,
                Fate::OffByCents => tally.off_by_cents += 1,
                Fate::Unpaid => tally.unpaid += 1,
            }
        }
        Ok(tally)
    }

    fn payments(&self, out: &mut TableWriter) -> Result<PaymentTally, crate::Error> {
        let mut tally = PaymentTally::default();
        let mut parts = Vec::with_capacity(5);
        for step in 0..self.invoices {
            let (invoice, fate, mut rng) = self.invoice(self.order.apply(step));
            if fate != Fate::Unpaid {
                let count = rng.random_range(2..=5usize);
                random::split(&mut rng, invoice.amount, count, &mut parts);
                if fate == Fate::OffByCents {
                    let last = parts.len() - 1;
                    parts[last] += random::cents_off(&mut rng, parts[last]);
                }
                for &amount in &parts {
                    let day = invoice.day + rng.random_range(0..PAYMENT_DELAY_DAYS);
                    let at = random::time_on(&mut rng, day);
                    out.push(&Row { amount, day, at, ..invoice })?;
                }
                match fate {
                    Fate::Paid => tally.in_paid_groups += count as u64,
                    _ => tally.in_off_by_cents_groups += count as u64,
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
        // One matched row per exactly paid invoice; its payments are in that row's array.
        Outcome {
            matched: i.paid,
            unmatched: Sides { invoices: rows.invoices - i.paid, payments: rows.payments - p.in_paid_groups },
            breakdown: json!({ "invoices": i, "payments": p }),
        }
    }
}
