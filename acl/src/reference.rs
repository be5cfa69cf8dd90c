//! The linear reference classifier: every rule in rank order, first match
//! wins. Obviously right and O(rules); the compiled classifier is checked
//! against it by property tests, and nothing else uses it.

use crate::rule::{SecurityGroup, Tuple, Verdict};

/// See the module documentation.
pub struct Linear<'a> {
    group: &'a SecurityGroup,
    order: Vec<usize>,
}

impl<'a> Linear<'a> {
    /// Ranks `group`'s rules: priority descending, then group order.
    pub fn new(group: &'a SecurityGroup) -> Linear<'a> {
        let mut order: Vec<usize> = (0..group.rules.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(group.rules[i].priority), i));
        Linear { group, order }
    }

    /// The verdict for `t`.
    pub fn classify(&self, t: &Tuple) -> Verdict {
        for &i in &self.order {
            let r = &self.group.rules[i];
            if r.matches(t) {
                return Verdict {
                    action: r.action,
                    rule: Some(i as u32),
                };
            }
        }
        Verdict {
            action: self.group.default,
            rule: None,
        }
    }
}
