"""How many items a fraction keeps, exactly, the same on the host and inside `jax.jit`: one definition for every
selection (BLISS's and MATES's 20%, MiniPLM's α, SALT_DS's m, RHO-1's k% of tokens in its loss)."""
import fractions

# A fraction must be num/den with den ≤ this, so that num · (n mod den) < 46,340² < 2^31 (no int32 overflow).
MAX_DENOMINATOR = 46_340


def fraction_to_count(n, fraction: float):
  """k = floor(fraction · n), exact: the number of items a fraction keeps (MiniPLM's K = α·|D|, RHO-1's k% of n tokens).

  `fraction` must be a ratio num/den with den ≤ `MAX_DENOMINATOR` (every decimal of up to 4 digits, 1/3, ...: the float
  nearest to it); then k = num·(n div den) + (num·(n mod den)) div den in integer arithmetic only, so `n` may be a
  Python int (k is an int) or an int32 array, traced inside `jax.jit` (k is one, exact for every n < 2^31).
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction={fraction} outside [0, 1]")
  frac = fractions.Fraction(float(fraction)).limit_denominator(MAX_DENOMINATOR)
  if float(frac) != float(fraction):
    raise ValueError(f"fraction={fraction} is not a ratio num/den with den <= {MAX_DENOMINATOR}; the nearest is "
                     f"{frac} = {float(frac)!r} (a decimal of up to 4 digits is always one)")
  num, den = frac.numerator, frac.denominator
  return num * (n // den) + (num * (n % den)) // den
