"""Performance predictors: learned models that score architectures before they are trained.

Pick one by name from the registry (kind ``predictors``)::

    from nasforge import registry
    pred = registry.create("predictors", "gin", seed=0)
    pred.fit(archs, targets, space)
    mean, std = pred.predict(other_archs, return_std=True)

Built in: ``mlp_ensemble`` (BANANAS), ``gin`` (POPNASv3 accuracy predictor), ``lstm`` (PNAS), ``svr``
(POPNASv3 time predictor on hand features), ``gp``, ``gbt`` (scikit-learn), and the cost
baselines ``params`` and ``flops``. See :class:`Predictor` for the contract.
"""

from .base import Predictor, kendall_tau, spearman_rho

__all__ = ["Predictor", "kendall_tau", "spearman_rho"]
