"""The model's code as MLflow's "models from code" loads it (``python_model=<this file>``): it names the pyfunc
model class instead of pickling an instance, so a model loads with the code bundled beside it (``code_paths``),
whatever cloudpickle or Python version built it. Importing it does nothing but that ``set_model``."""

from mlflow.models import set_model

from fstag.serve.pyfunc import FstagModel

set_model(FstagModel())
