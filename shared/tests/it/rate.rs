//! Token buckets: bursts, refill, waits and bounded debt.

use arbor_shared::rate::{Rate, TokenBucket};

#[test]
fn a_bucket_takes_its_burst_then_waits_for_refill() {
    let rate = Rate::new(10.0, 2.0); // 10 a second, bursts of 20
    let mut b = TokenBucket::full(&rate, 100.0);
    for _ in 0..20 {
        b.take(&rate, 100.0).unwrap();
    }
    let wait = b.take(&rate, 100.0).unwrap_err();
    assert!((wait - 0.1).abs() < 1e-9, "{wait}");
    // Half a second later five more fit.
    for _ in 0..5 {
        b.take(&rate, 100.5).unwrap();
    }
    assert!(b.take(&rate, 100.5).is_err());
    // Refill stops at the burst.
    assert!(b.is_full(&rate, 1_000.0));
    for _ in 0..20 {
        b.take(&rate, 1_000.0).unwrap();
    }
    assert!(b.take(&rate, 1_000.0).is_err());
}

#[test]
fn a_charge_puts_the_bucket_in_debt_bounded_by_a_minute_of_the_rate() {
    let rate = Rate::new(10.0, 1.0);
    let mut b = TokenBucket::full(&rate, 0.0);
    b.charge(&rate, 50.0, 0.0);
    // 10 - 50 = -40: 4.1 s until one token.
    let wait = b.take(&rate, 0.0).unwrap_err();
    assert!((wait - 4.1).abs() < 1e-9, "{wait}");
    // A huge charge stops at -600 (a minute of 10 a second).
    b.charge(&rate, 1e9, 0.0);
    let wait = b.take(&rate, 0.0).unwrap_err();
    assert!((wait - 60.1).abs() < 1e-9, "{wait}");
    b.take(&rate, 61.0).unwrap();
    // A clock that goes back refills nothing and charges still count.
    let mut c = TokenBucket::full(&rate, 10.0);
    c.charge(&rate, 10.0, 5.0);
    assert!(c.take(&rate, 5.0).is_err());
}
