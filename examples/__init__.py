"""Example user code for ctpipe: the synthetic sensor data's preprocessing_fn and model_fn."""
