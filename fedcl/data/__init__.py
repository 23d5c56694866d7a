"""Datasets, scenarios (benchmark -> stream -> experience) and batch preprocessing."""

from fedcl.data.arrays import DatasetSplits, ImageArrays
from fedcl.data.datasets import DATASETS, dataset_names, load_dataset
from fedcl.data.preprocessing import to_model_input
from fedcl.data.scenarios import SCENARIOS, Benchmark, Experience, build_benchmark

__all__ = [
    "DATASETS", "SCENARIOS", "Benchmark", "DatasetSplits", "Experience", "ImageArrays",
    "build_benchmark", "dataset_names", "load_dataset", "to_model_input",
]
