"""Research studies kept out of the installed package (the Hessian splits of the
normalised family); run from the repository root."""
