//! Test card numbers, following the numbers real providers document for
//! their test modes: each one always produces the same outcome.

/// How a card number is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardOutcome {
    Approve,
    Decline {
        code: &'static str,
        decline_code: &'static str,
        message: &'static str,
    },
}

/// The outcome for `number` (digits only). Unknown numbers that pass the
/// Luhn check are approved; numbers that fail it are declined as incorrect.
pub fn outcome(number: &str) -> CardOutcome {
    let decline = |code, decline_code, message| CardOutcome::Decline {
        code,
        decline_code,
        message,
    };
    match number {
        "4000000000000002" => decline(
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        ),
        "4000000000009995" => decline(
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        "4000000000009987" => decline("card_declined", "lost_card", "Your card was declined."),
        "4000000000000069" => decline("expired_card", "expired_card", "Your card has expired."),
        "4000000000000127" => decline(
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        "4000000000000119" => decline(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        n if !luhn_valid(n) => decline(
            "incorrect_number",
            "incorrect_number",
            "Your card number is incorrect.",
        ),
        _ => CardOutcome::Approve,
    }
}

/// The Luhn checksum every real card number satisfies.
pub fn luhn_valid(number: &str) -> bool {
    if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The brand a provider would report for a number's prefix.
pub fn brand(number: &str) -> &'static str {
    match number.as_bytes().first() {
        Some(b'4') => "visa",
        Some(b'5') | Some(b'2') => "mastercard",
        Some(b'3') => "amex",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_cards() {
        assert_eq!(outcome("4242424242424242"), CardOutcome::Approve);
        assert!(matches!(
            outcome("4000000000000002"),
            CardOutcome::Decline {
                code: "card_declined",
                ..
            }
        ));
        assert!(matches!(
            outcome("4242424242424241"),
            CardOutcome::Decline {
                code: "incorrect_number",
                ..
            }
        ));
        assert!(luhn_valid("5555555555554444"));
        assert!(!luhn_valid("42424242"));
        assert_eq!(brand("5555555555554444"), "mastercard");
    }
}
