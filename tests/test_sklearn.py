"""qstore.sklearn: scikit-learn's own estimator checks, Pipeline, GridSearchCV, params, and bad input."""
import numpy as np
import pytest

pytest.importorskip('sklearn')
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from qstore.sklearn import QuantumClassifier, QuantumRegressor  # noqa: E402


# Every applicable check passes; scikit-learn itself skips check_array_api_input unless SCIPY_ARRAY_API is set.
@parametrize_with_checks([QuantumClassifier(), QuantumRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def iris(n=90):
    X, y = load_iris(return_X_y=True)
    keep = np.random.default_rng(0).permutation(len(X))[:n]
    return X[keep], y[keep]


def test_pipeline_and_grid_search():
    X, y = iris()
    pipe = make_pipeline(StandardScaler(), QuantumClassifier(epochs=10))
    grid = GridSearchCV(pipe, {'quantumclassifier__depth': [1, 2], 'quantumclassifier__learning_rate': [0.05, 0.2]},
                        cv=3)
    grid.fit(X, y)
    assert set(grid.cv_results_['params'][0]) == {'quantumclassifier__depth', 'quantumclassifier__learning_rate'}
    assert grid.best_score_ > 0.8, grid.best_score_
    assert grid.score(X, y) > 0.8
    assert grid.best_estimator_.predict_proba(X).shape == (len(X), 3)
    assert cross_val_score(make_pipeline(StandardScaler(), QuantumRegressor(epochs=10)), X[:, :3], X[:, 3],
                           cv=3).mean() > 0.7


def test_params_change_the_model():
    X, y = iris(60)
    a = QuantumClassifier(depth=1, epochs=2).fit(X, y)
    b = clone(a).set_params(depth=3)
    assert b.get_params()['depth'] == 3 and not hasattr(b, 'weights_')
    b.fit(X, y)
    assert len(b.weights_) > len(a.weights_)
    c = clone(a).set_params(random_state=5).fit(X, y)
    assert not np.array_equal(c.weights_, a.weights_)
    d = QuantumClassifier(depth=1, epochs=2, encoding='dense_angle').fit(X, y)
    assert d.model_.encoder.n_qubits == 2 and a.model_.encoder.n_qubits == 4


def test_regressor_multi_output_and_units():
    X, Y = make_regression(60, 3, n_targets=2, noise=0.1, random_state=0)
    X = StandardScaler().fit_transform(X)
    reg = QuantumRegressor(epochs=30, depth=2).fit(X, 1000 + 50 * Y)  # targets far from [-1, 1]
    assert reg.predict(X).shape == (60, 2)
    assert reg.score(X, 1000 + 50 * Y) > 0.6
    assert reg.fit(X, Y[:, 0]).predict(X).shape == (60,)


def test_bad_input_gets_clear_errors():
    X, y = iris(30)
    with pytest.raises(ValueError, match='1 class'):
        QuantumClassifier().fit(X, np.zeros(30))
    with pytest.raises(ValueError, match='NaN'):
        QuantumClassifier(epochs=1).fit(np.where(X > 7, np.nan, X), y)
    with pytest.raises(ValueError, match="unknown encoding 'fourier'"):
        QuantumClassifier(encoding='fourier').fit(X, y)
    with pytest.raises(ValueError, match='learning_rate must be positive'):
        QuantumRegressor(learning_rate=-1.0).fit(X, y)
    fitted = QuantumClassifier(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match='X has 3 features'):
        fitted.predict(X[:, :3])
