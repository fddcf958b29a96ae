//! Seeded randomness that can be addressed by index, and the value distributions shared by shapes.
//!
//! A run derives one ChaCha8 key per [`Domain`] from the seed; the entity with index `i` in that
//! domain draws from stream `i` of that key. So any row can be regenerated on its own — the payment
//! side recomputes the invoice it pays instead of keeping the invoice table in memory — and the
//! output does not depend on thread scheduling. Only integer draws are used, so values do not
//! depend on floating-point details of the platform.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Independent families of random streams.
#[derive(Clone, Copy)]
pub(crate) enum Domain {
    /// Whole-run decisions: permutations.
    Plan = 0,
    /// One stream per invoice (one-to-one).
    Invoice = 1,
    /// One stream per pair of payments (one-to-one).
    PaymentPair = 2,
    /// One stream per group (split, batch, many-to-many).
    Group = 3,
}

const DOMAINS: usize = 4;

/// The per-domain keys of one run.
pub(crate) struct Streams {
    keys: [[u8; 32]; DOMAINS],
}

impl Streams {
    pub(crate) fn new(seed: u64) -> Self {
        let mut root = ChaCha8Rng::seed_from_u64(seed);
        let mut keys = [[0u8; 32]; DOMAINS];
        for key in &mut keys {
            root.fill_bytes(key);
        }
        Streams { keys }
    }

    /// The random stream of entity `index` in `domain`.
    pub(crate) fn rng(&self, domain: Domain, index: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.keys[domain as usize]);
        rng.set_stream(index);
        rng
    }
}

/// A seeded bijection on `0..n`: `i ↦ (a·i + b) mod n` with `gcd(a, n) = 1`.
///
/// Used to visit invoices or groups in a scrambled order and to scramble reference numbers, so
/// neither file is sorted by reference.
pub(crate) struct Permutation {
    n: u64,
    a: u64,
    b: u64,
}

impl Permutation {
    pub(crate) fn new(n: u64, rng: &mut impl Rng) -> Self {
        if n <= 2 {
            return Permutation { n, a: 1, b: 0 };
        }
        // A multiplier from the middle half of the range spreads neighbours far apart.
        let a = loop {
            let a = rng.random_range((n / 4).max(1)..n - n / 4);
            if gcd(a, n) == 1 {
                break a;
            }
        };
        Permutation { n, a, b: rng.random_range(0..n) }
    }

    pub(crate) fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        ((u128::from(self.a) * u128::from(i) + u128::from(self.b)) % u128::from(self.n)) as u64
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Days from 1970-01-01 to 2026-01-01 (the Date32 of the first day of the data).
pub(crate) const FIRST_DAY: i32 = 20_454;
/// Days in the data's year (2026, not a leap year).
pub(crate) const DAYS_IN_YEAR: i32 = 365;
/// Day of the year on which each month of 2026 starts, and the year's end.
const MONTH_STARTS: [i32; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Smallest generated invoice amount, in cents (10.00): large enough that 1% is several cents.
pub(crate) const MIN_AMOUNT: i64 = 1_000;

/// An invoice amount in cents, 10.00 – 50,000.00, skewed to small values; 30% are whole units
/// (which is what lets a payment sit exactly on the 1% boundary).
pub(crate) fn amount(rng: &mut impl Rng) -> i64 {
    let cents = match rng.random_range(0..100u32) {
        0..30 => rng.random_range(MIN_AMOUNT..10_000),
        30..70 => rng.random_range(10_000..100_000),
        70..95 => rng.random_range(100_000..1_000_000),
        _ => rng.random_range(1_000_000..=5_000_000),
    };
    if rng.random_range(0..100u32) < 30 { (cents / 100 * 100).max(MIN_AMOUNT) } else { cents }
}

/// A currency index into [`crate::table::CURRENCIES`]: EUR 50%, USD 30%, GBP 20%.
pub(crate) fn currency(rng: &mut impl Rng) -> u8 {
    match rng.random_range(0..10u32) {
        0..5 => 0,
        5..8 => 1,
        _ => 2,
    }
}

/// A day of 2026 (Date32), at most `days_before_end` days before the year's end.
pub(crate) fn day(rng: &mut impl Rng, days_before_end: i32) -> i32 {
    FIRST_DAY + rng.random_range(0..(DAYS_IN_YEAR - days_before_end).max(1))
}

/// A day (Date32) in `month` (1–12) of 2026.
pub(crate) fn day_in_month(rng: &mut impl Rng, month: u32) -> i32 {
    let m = month as usize;
    FIRST_DAY + rng.random_range(MONTH_STARTS[m - 1]..MONTH_STARTS[m])
}

/// A timestamp (µs since the epoch, UTC) on `day` during office hours, whole seconds.
pub(crate) fn time_on(rng: &mut impl Rng, day: i32) -> i64 {
    let seconds = rng.random_range(8 * 3600..18 * 3600i64);
    i64::from(day) * MICROS_PER_DAY + seconds * 1_000_000
}

/// `total` cut into `parts` positive amounts that sum to it exactly (`total ≥ 2·parts`).
pub(crate) fn split(rng: &mut impl Rng, total: i64, parts: usize, out: &mut Vec<i64>) {
    out.clear();
    let mut rest = total;
    for left in (2..=parts as i64).rev() {
        // Around an even share, ±50%: every part stays ≥ 1 and the last one ≥ rest/4.
        let share = rest / left;
        let part = (share + rng.random_range(-share / 2..=share / 2)).max(1);
        out.push(part);
        rest -= part;
    }
    out.push(rest);
}

/// A non-zero difference of 1–99 cents that keeps `amount + delta` positive.
pub(crate) fn cents_off(rng: &mut impl Rng, amount: i64) -> i64 {
    let delta = rng.random_range(1..100i64);
    if rng.random::<bool>() && amount > delta { -delta } else { delta }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for n in [0, 1, 2, 3, 4, 6, 10, 97, 1000, 4096] {
            let p = Permutation::new(n, &mut rng);
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let j = p.apply(i) as usize;
                assert!(!seen[j], "n={n}: {j} hit twice");
                seen[j] = true;
            }
        }
    }

    #[test]
    fn split_parts_are_positive_and_sum_to_the_total() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut parts = Vec::new();
        for _ in 0..10_000 {
            let n = rng.random_range(1..=5usize);
            let total = rng.random_range(2 * n as i64..100_000);
            split(&mut rng, total, n, &mut parts);
            assert_eq!(parts.len(), n);
            assert!(parts.iter().all(|p| *p > 0), "{total} into {parts:?}");
            assert_eq!(parts.iter().sum::<i64>(), total);
        }
    }

    #[test]
    fn month_days_stay_in_their_month() {
        assert_eq!(FIRST_DAY + MONTH_STARTS[2], 20_454 + 59); // 2026-03-01
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for month in 1..=12 {
            for _ in 0..100 {
                let d = day_in_month(&mut rng, month) - FIRST_DAY;
                assert!(MONTH_STARTS[month as usize - 1] <= d && d < MONTH_STARTS[month as usize]);
            }
        }
    }
}
