"""Bilevel optimisation, generic over parameter pytrees: Hessian-vector products, linear solvers for the implicit
function theorem's system, implicit and unrolled hypergradients (`hypergradient`), and BLISS's jit-compiled bilevel
step (`step`). The objectives G and F live in `bliss_jax.losses.bilevel`."""
