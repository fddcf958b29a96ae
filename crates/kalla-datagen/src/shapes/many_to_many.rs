//! Many-to-many: invoices and payments carry `customer_id` and `period`; a (customer, period)
//! group matches when both sides' sums are equal.
//!
//! Group `g` is customer `g / 12 + 1` in month `g % 12 + 1` of 2026, drawn from stream `g`: its
//! fate first — 80% balanced (1–4 payments summing exactly to 1–4 invoices), 8% unequal (off by
//! 1–99 cents), 6% invoices only, 6% payments only — then its invoice count, so counts can be
//! summed without drawing the rest. Groups are added until there are `N` invoices; the last one is
//! cut to fit (its payments follow the invoices it kept). Payments are written in a seeded
//! permuted order of the groups and carry their own remittance number as `reference_number`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use super::{Generator, Outcome, groups_covering};
use crate::random::{self, Domain, Permutation, Streams};
use crate::table::{Reference, Row, TableWriter};
use crate::truth::Sides;

pub(crate) struct ManyToMany {
    streams: Streams,
    invoices: u64,
    groups: u64,
    /// The invoice count of the last group, cut so that the counts sum to `invoices`.
    last_count: u64,
    /// The payment side visits group `order.apply(t)` at step `t`.
    order: Permutation,
    /// The invoice with key `id` has reference `INV-<codes.apply(id - 1)>`.
    codes: Permutation,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Balanced,
    Unequal,
    InvoicesOnly,
    PaymentsOnly,
}

const MONTHS: u64 = 12;
const MAX_ROWS_PER_SIDE: u64 = 4;

/// The fate and invoice count of a group: the first draws of its stream.
fn draw_fate(rng: &mut ChaCha8Rng) -> (Fate, u64) {
    let fate = match rng.random_range(0..1000u32) {
        0..800 => Fate::Balanced,
        800..880 => Fate::Unequal,
        880..940 => Fate::InvoicesOnly,
        _ => Fate::PaymentsOnly,
    };
    let invoices = if fate == Fate::PaymentsOnly { 0 } else { rng.random_range(1..=MAX_ROWS_PER_SIDE) };
    (fate, invoices)
}

#[derive(Default, Serialize)]
pub(crate) struct InvoiceTally {
    in_balanced_groups: u64,
    in_unequal_groups: u64,
    in_invoice_only_groups: u64,
}

#[derive(Default, Serialize)]
pub(crate) struct PaymentTally {
    balanced_groups: u64,
    unequal_groups: u64,
    invoice_only_groups: u64,
    payment_only_groups: u64,
    in_balanced_groups: u64,
    in_unequal_groups: u64,
    in_payment_only_groups: u64,
}

/// One group: its invoices (without keys or references) and what the payment side needs.
struct Drawn {
    fate: Fate,
    currency: u8,
    invoices: Vec<Row>,
    rng: ChaCha8Rng,
}

impl ManyToMany {
    pub(crate) fn new(seed: u64, invoices: u64) -> Self {
        let streams = Streams::new(seed);
        let (groups, last_count) = groups_covering(invoices, |g| draw_fate(&mut streams.rng(Domain::Group, g)).1);
        let mut plan = streams.rng(Domain::Plan, 0);
        let order = Permutation::new(groups, &mut plan);
        let codes = Permutation::new(invoices, &mut plan);
        ManyToMany { streams, invoices, groups, last_count, order, codes }
    }

    fn draw(&self, g: u64) -> Drawn {
        let mut rng = self.streams.rng(Domain::Group, g);
        let (fate, drawn_count) = draw_fate(&mut rng);
        let count = if g + 1 == self.groups { self.last_count } else { drawn_count };
        let customer = g / MONTHS + 1;
        let month = (g % MONTHS) as u32 + 1;
        let currency = random::currency(&mut rng);
        let invoices = (0..count)
            .map(|_| {
                let day = random::day_in_month(&mut rng, month);
                Row {
                    customer,
                    amount: random::amount(&mut rng),
                    currency,
                    day,
                    reference: Reference::Invoice(0), // set when written: it depends on the key
                    at: random::time_on(&mut rng, day),
                    group: Some((customer as i64, month)),
                }
            })
            .collect();
        Drawn { fate, currency, invoices, rng }
    }
}

impl Generator for ManyToMany {
    type InvoiceTally = InvoiceTally;
    type PaymentTally = PaymentTally;

    fn invoices(&self, out: &mut TableWriter) -> Result<InvoiceTally, crate::Error> {
        let mut tally = InvoiceTally::default();
        for g in 0..self.groups {
            let drawn = self.draw(g);
            for invoice in &drawn.invoices {
                let code = self.codes.apply(out.next_id() as u64 - 1);
                out.push(&Row { reference: Reference::Invoice(code), ..*invoice })?;
            }
            let count = drawn.invoices.len() as u64;
            match drawn.fate {
                Fate::Balanced => tally.in_balanced_groups += count,
                Fate::Unequal => tally.in_unequal_groups += count,
                Fate::InvoicesOnly => tally.in_invoice_only_groups += count,
                Fate::PaymentsOnly => {}
            }
        }
        Ok(tally)
    }

    fn payments(&self, out: &mut TableWriter) -> Result<PaymentTally, crate::Error> {
        let mut tally = PaymentTally::default();
        let mut parts = Vec::with_capacity(MAX_ROWS_PER_SIDE as usize);
        for step in 0..self.groups {
            let g = self.order.apply(step);
            let Drawn { fate, currency, invoices, mut rng } = self.draw(g);
            let sum: i64 = invoices.iter().map(|i| i.amount).sum();
            let total = match fate {
                Fate::Balanced => sum,
                Fate::Unequal => sum + random::cents_off(&mut rng, sum),
                Fate::InvoicesOnly => {
                    tally.invoice_only_groups += 1;
                    continue;
                }
                Fate::PaymentsOnly => random::amount(&mut rng),
            };
            let count = rng.random_range(1..=MAX_ROWS_PER_SIDE);
            random::split(&mut rng, total, count as usize, &mut parts);
            let customer = g / MONTHS + 1;
            let month = (g % MONTHS) as u32 + 1;
            for &amount in &parts {
                let day = random::day_in_month(&mut rng, month);
                let row = Row {
                    customer,
                    amount,
                    currency,
                    day,
                    reference: Reference::Remittance(out.next_id() as u64),
                    at: random::time_on(&mut rng, day),
                    group: Some((customer as i64, month)),
                };
                out.push(&row)?;
            }
            match fate {
                Fate::Balanced => {
                    tally.balanced_groups += 1;
                    tally.in_balanced_groups += count;
                }
                Fate::Unequal => {
                    tally.unequal_groups += 1;
                    tally.in_unequal_groups += count;
                }
                _ => {
                    tally.payment_only_groups += 1;
                    tally.in_payment_only_groups += count;
                }
            }
        }
        Ok(tally)
    }

    fn outcome(&self, i: InvoiceTally, p: PaymentTally, rows: Sides) -> Outcome {
        // One matched row per balanced group, naming all of its invoices and payments.
        debug_assert_eq!(rows.invoices, self.invoices);
        Outcome {
            matched: p.balanced_groups,
            unmatched: Sides {
                invoices: rows.invoices - i.in_balanced_groups,
                payments: rows.payments - p.in_balanced_groups,
            },
            breakdown: json!({ "groups": self.groups, "invoices": i, "payments": p }),
        }
    }
}
