"""dsketch: distributed sketched Newton methods for large-n regression.

A design matrix lives in a Zarr store; Dask workers stream its row blocks and compute the
loss, gradient, exact low-rank Hessian parts and a sketch of ``A^T diag(D) A``; the driver
solves the reduced ``d x d`` Newton system.
"""

from dsketch.api import fit, fit_network, initial_point
from dsketch.config import Cluster, Curvature, Solver
from dsketch.cv import CVResult, cv_path
from dsketch.engine.client import AllocatorTuning, connect
from dsketch.engine.core import Engine
from dsketch.engine.datagen import make_problem
from dsketch.inference import Inference, covariance
from dsketch.models import get_model, loss_gradient_hessian
from dsketch.path import PathResult, fit_path
from dsketch.predict import predict
from dsketch.sketch import make_sketch
from dsketch.solvers.result import (
    FitResult,
    NewtonState,
    Status,
    load_result,
    save_result,
)
from dsketch.store import open_problem, write_problem
from dsketch.store.folds import RowMask, RowSubset, fold_ids
from dsketch.store.memory import MemoryProblem, in_memory

__version__ = "0.1.0"

__all__ = [
    "AllocatorTuning",
    "CVResult",
    "Cluster",
    "Curvature",
    "Engine",
    "FitResult",
    "Inference",
    "MemoryProblem",
    "NewtonState",
    "PathResult",
    "RowMask",
    "RowSubset",
    "Solver",
    "Status",
    "connect",
    "covariance",
    "cv_path",
    "fit",
    "fit_network",
    "fit_path",
    "fold_ids",
    "get_model",
    "in_memory",
    "initial_point",
    "load_result",
    "loss_gradient_hessian",
    "make_problem",
    "make_sketch",
    "open_problem",
    "predict",
    "save_result",
    "write_problem",
]
