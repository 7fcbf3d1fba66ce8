//! Tags across the services meshstack uses: each SDK has a tag type of its own (and EKS and SQS
//! answer with maps), but what meshstack asks of them is the same — does this carry the stack's
//! tag, what are its tags as a map — and so is what it puts on what it creates
//! ([`super::resource_tags`], in each service's type).

use std::collections::BTreeMap;

use super::{resource_tags, STACK_TAG};
use crate::config::Stack;

/// A tag as a key and a value (a missing one is `""`), whatever the service's type.
pub trait KeyValue {
    fn key_value(&self) -> (&str, &str);
}

impl KeyValue for aws_sdk_ec2::types::Tag {
    fn key_value(&self) -> (&str, &str) {
        (self.key().unwrap_or(""), self.value().unwrap_or(""))
    }
}

impl KeyValue for aws_sdk_iam::types::Tag {
    fn key_value(&self) -> (&str, &str) {
        (self.key(), self.value())
    }
}

impl KeyValue for aws_sdk_eventbridge::types::Tag {
    fn key_value(&self) -> (&str, &str) {
        (self.key(), self.value())
    }
}

impl KeyValue for aws_sdk_elasticloadbalancing::types::Tag {
    fn key_value(&self) -> (&str, &str) {
        (self.key(), self.value().unwrap_or(""))
    }
}

impl KeyValue for aws_sdk_elasticloadbalancingv2::types::Tag {
    fn key_value(&self) -> (&str, &str) {
        (self.key().unwrap_or(""), self.value().unwrap_or(""))
    }
}

/// An entry of a service's tag map (EKS, SQS).
impl KeyValue for (&String, &String) {
    fn key_value(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<T: KeyValue> KeyValue for &T {
    fn key_value(&self) -> (&str, &str) {
        (*self).key_value()
    }
}

/// Whether `tags` hold `key` with `value`.
pub fn has<T: KeyValue>(tags: impl IntoIterator<Item = T>, key: &str, value: &str) -> bool {
    tags.into_iter().any(|t| t.key_value() == (key, value))
}

/// Whether `tags` carry the stack's tag: meshstack made the resource for this stack, and may
/// change or delete it.
pub fn of_stack<T: KeyValue>(stack: &Stack, tags: impl IntoIterator<Item = T>) -> bool {
    has(tags, STACK_TAG, &stack.name)
}

/// `tags` as a map, leaving out any without a key.
pub fn map<T: KeyValue>(tags: impl IntoIterator<Item = T>) -> BTreeMap<String, String> {
    tags.into_iter()
        .map(|t| {
            let (k, v) = t.key_value();
            (k.to_string(), v.to_string())
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The tags of resource `key`, named `name`, as IAM takes them.
pub fn iam(stack: &Stack, key: &str, name: &str) -> Vec<aws_sdk_iam::types::Tag> {
    typed(stack, key, name, |k, v| {
        aws_sdk_iam::types::Tag::builder().key(k).value(v).build()
    })
}

/// The tags of resource `key`, named `name`, as EventBridge takes them.
pub fn eventbridge(stack: &Stack, key: &str, name: &str) -> Vec<aws_sdk_eventbridge::types::Tag> {
    typed(stack, key, name, |k, v| {
        aws_sdk_eventbridge::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    })
}

/// [`resource_tags`] built into a service's type, whose builder wants both key and value.
fn typed<T, E: std::fmt::Debug>(
    stack: &Stack,
    key: &str,
    name: &str,
    build: impl Fn(String, String) -> Result<T, E>,
) -> Vec<T> {
    resource_tags(stack, key, name)
        .into_iter()
        .map(|(k, v)| build(k, v).expect("key and value set"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_tag_is_read_the_same_from_every_service() {
        let stack = Stack::parse("name: demo\n", "t.yaml").unwrap();
        let iam = iam(&stack, "role/demo-node", "demo-node");
        assert!(of_stack(&stack, &iam));
        let events = eventbridge(&stack, "rule/r", "r");
        assert!(of_stack(&stack, &events));
        let other = Stack::parse("name: other\n", "t.yaml").unwrap();
        assert!(!of_stack(&other, &iam) && !of_stack(&other, &events));

        let eks = std::collections::HashMap::from([
            (STACK_TAG.to_string(), "demo".to_string()),
            ("Name".to_string(), "demo".to_string()),
        ]);
        assert!(of_stack(&stack, &eks));
        assert!(!of_stack(
            &stack,
            None::<&std::collections::HashMap<String, String>>
                .into_iter()
                .flatten()
        ));

        let ec2 = [
            aws_sdk_ec2::types::Tag::builder()
                .key("a")
                .value("1")
                .build(),
            aws_sdk_ec2::types::Tag::builder().value("no key").build(),
            aws_sdk_ec2::types::Tag::builder().key("b").build(),
        ];
        assert_eq!(
            map(&ec2),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), String::new())])
        );
        assert!(has(&ec2, "a", "1") && !has(&ec2, "a", "2"));
    }
}
