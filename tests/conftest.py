# jaxprobe sets its XLA:CPU flags on import, which must happen before JAX's backend starts
# (jaxprobe/__init__.py): import it before any test module runs a computation.
import jaxprobe  # noqa: F401
