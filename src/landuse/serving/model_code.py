"""MLflow "models from code" entry of the landuse region model: loading a logged model runs this file,
which takes the model class from the installed ``landuse`` package (nothing is unpickled)."""

from mlflow.models import set_model

from landuse.serving.pyfunc import python_model

set_model(python_model())
