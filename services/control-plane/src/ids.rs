//! Ids of tenants and sagas, derived from the request's idempotency id.

use uuid::Uuid;

use crate::Operation;

/// Ids derive from the idempotency id: a repeated request maps to the same
/// tenant and saga, whichever replica sees it.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c61_6e64_6c6f_7264_0000_0000_0000_0001);

/// The tenant a request with `idempotency_id` makes.
pub fn tenant_id(idempotency_id: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("tenant:{idempotency_id}").as_bytes())
}

/// The saga that runs `operation` for the request `idempotency_id`.
pub fn saga_id(operation: Operation, idempotency_id: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("saga:{}:{idempotency_id}", operation.as_str()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derive_from_the_idempotency_id() {
        assert_eq!(tenant_id("x"), tenant_id("x"));
        assert_ne!(tenant_id("x"), tenant_id("y"));
        assert_ne!(saga_id(Operation::Provision, "x"), tenant_id("x"));
    }

    /// The spelling is part of the id: ids of sagas already stored must not
    /// change when `Operation` is refactored.
    #[test]
    fn a_saga_id_is_the_one_derived_from_the_operation_text() {
        let by_text = Uuid::new_v5(&ID_NAMESPACE, b"saga:provision:x");
        assert_eq!(saga_id(Operation::Provision, "x"), by_text);
    }
}
