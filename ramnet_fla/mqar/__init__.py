"""MQAR (multi-query associative recall, Zoology): data, training harness, `ramnet-fla mqar`."""

from ramnet_fla.mqar.data import IGNORE_INDEX, MQARTask, generate_mqar
from ramnet_fla.mqar.train import MQARModel, MQARRun, run_sweep, train_mqar

__all__ = ['IGNORE_INDEX', 'MQARModel', 'MQARRun', 'MQARTask', 'generate_mqar', 'run_sweep', 'train_mqar']
