//! The demo users auth knows. There is no sign-up: the lab is about traces,
//! and fixed users make every tool (traffic driver, scenarios, tests) able
//! to log in without setup.

/// A seeded account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    /// The login name.
    pub username: &'static str,
    /// The password: `<username>-password`, easy to type in a workshop.
    pub password: &'static str,
    /// The id auth puts in tokens and the other services see as `user_id`
    /// (`enduser.id` on spans).
    pub user_id: &'static str,
}

/// alice, bob and carol.
pub const DEMO_USERS: [DemoUser; 3] = [
    DemoUser {
        username: "alice",
        password: "alice-password",
        user_id: "u-1001",
    },
    DemoUser {
        username: "bob",
        password: "bob-password",
        user_id: "u-1002",
    },
    DemoUser {
        username: "carol",
        password: "carol-password",
        user_id: "u-1003",
    },
];

/// The demo user called `username`, if any.
pub fn find(username: &str) -> Option<&'static DemoUser> {
    DEMO_USERS.iter().find(|u| u.username == username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_follow_the_documented_rule_and_ids_are_unique() {
        for user in DEMO_USERS {
            assert_eq!(user.password, format!("{}-password", user.username));
            assert_eq!(find(user.username), Some(&user));
            let same_id = DEMO_USERS.iter().filter(|u| u.user_id == user.user_id);
            assert_eq!(same_id.count(), 1, "{}", user.user_id);
        }
        assert_eq!(find("mallory"), None);
    }
}
