"""A lot's product and its pools' product (SPEC §4)."""

from __future__ import annotations

from collections.abc import Iterable

from .policy import (
    Policy,
)

# --- products (SPEC §4: a lot's product, its pools' product) -------------------------------------------------------


def lot_product_problem(product: str, kind: str, policy: Policy) -> str | None:
    """A final lot names a final product of the policy (``products``); an intermediate lot a declared intermediate
    (``intermediates``) or a final product."""
    if product in policy.products:
        return None
    if kind != "final" and product in policy.intermediates:
        return None
    finals = ", ".join(sorted(policy.products))
    if kind == "final":
        return f"product {product!r} is not a final product of the policy (known: {finals})"
    known = ", ".join(sorted(policy.intermediates))
    return f"product {product!r} is not in the policy (final products: {finals}; intermediates: {known})"


def upstream_product_problems(product: str, upstream_pools: Iterable[tuple[str, str]]) -> list[str]:
    """Every pool upstream of a final lot was made for that final product: (pool_number, product) pairs."""
    return [
        f"pool {number} was made for {pool_product}, not {product}"
        for number, pool_product in sorted(upstream_pools)
        if pool_product != product
    ]
