"""Real backprop mistakes from public sources, re-expressed against the course's exercises.

Each Mistake cites where the mistake was made or reported (a student's or a course's repository, an issue
thread, a Q&A or forum thread), names the exercise (tests/mistakes/exercises.py) it is re-expressed in, and
carries the kind a teacher would name (gradlab's kind labels). The code is ours: it reproduces the mistake in
the exercise's own signature and notation, and nothing else of the source.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import exercises as ex


@dataclass
class Mistake:
    id: str
    url: str
    kind: str
    spec: str
    student: dict
    note: str


def σ(v):
    return torch.sigmoid(v)


def _ce_parts(logits, labels):
    n, c = logits.shape
    p = torch.softmax(logits, dim=1)
    return n, c, p, F.one_hot(labels, c).to(logits.dtype)


# --------------------------------------------------------------------------- sigmoid: the derivative's form and place
def l1_deriv_on_preactivation(X, y, w):
    # BoltzmannEntropy/interviews.ai#4: "the sigmoid derivative is y(1 − y), not x(1 − x)".
    z = X * w
    h = σ(z)
    return (2 * (h - y.reshape(-1, 1)) * z * (1 - z) * X).sum()


def l2_deriv_on_preactivation(x, y, w, b):
    # kyle8998/Sudo-Productivity#3: the derivative x(1 − x) is applied to the pre-activation.
    z = w * x + b
    h = σ(z)
    return (2 * (h - y) * z * (1 - z) * x).mean()


def l2_deriv_fed_activation(x, y, w, b):
    # benoitfragit/libBrain#78: the activation, not the weighted sum, is passed to the derivative function.
    h = σ(w * x + b)
    return (2 * (h - y) * σ(h) * (1 - σ(h)) * x).mean()


def l3_dsigma_on_input(z):
    # BoltzmannEntropy/interviews.ai#15: backward uses x·(1 − x) with x the layer's input.
    return z * (1 - z)


def l3_dsigma_one_minus(z):
    # torch/torch7#232: dS(x) = 1 − x with x = S(y): only the 1 − σ factor.
    return 1 - σ(z)


def l3_backward_sigmoid_prime_of_output(cache):
    # dwhitena/gophernet#6: sigmoid' is applied to the layer's output instead of its input.
    x, y, z, s = cache
    dJ_dsigma = 2 * (s - y) / len(x)
    dJ_dz = σ(s) * (1 - σ(s)) * dJ_dsigma
    return (x * dJ_dz).sum(), dJ_dz.sum()


def l3_backward_one_minus_of_output(cache):
    # devhide.com (question 45988293): the derivative is 1 − sigmoid(x), called on the output l1.
    x, y, z, s = cache
    dJ_dz = (1 - σ(s)) * 2 * (s - y) / len(x)
    return (x * dJ_dz).sum(), dJ_dz.sum()


def l5_sigmoid_backward_of_output(dout, cache):
    # rasmusbergpalm/DeepLearnToolbox#165: sigm(a)·(1 − sigm(a)) where a already holds the sigmoid's output.
    out = cache
    return dout * σ(out) * (1 - σ(out))


def l5_sigmoid_backward_of_upstream(dout, cache):
    # yizt/numpy_neural_network#3: sigmoid_backward returns sigmoid(1 − sigmoid(next_dz)), from dout alone.
    return σ(1 - σ(dout))


# --------------------------------------------------------------------------- one neuron (lessons 1 to 4)
def l1_broadcast_labels(X, y, w):
    # matroid/dlwithtf#14: y of shape (N,) against predictions of shape (N, 1): y − y_pred is (N, N).
    h = σ(X * w)
    return (2 * (h - y) * h * (1 - h) * X).sum()


def l2_dot_then_mean(x, y, w, b):
    # patrickloeber/pytorchTutorial#11: np.dot(...) is already a sum, so the .mean() after it divides nothing.
    h = σ(w * x + b)
    return torch.dot(2 * x, (h - y) * h * (1 - h)).mean()


def l2_error_times_input_twice(x, y, w, b):
    # udacity/deep-learning-v2-pytorch#409: the error term already holds x, and the weight step multiplies by x again.
    h = σ(w * x + b)
    error_term = 2 * (h - y) * h * (1 - h) * x
    return (error_term * x).mean()


def l2_db_not_averaged(x, y, w, b):
    # tsycnh/mlbasic#2: the per-sample gradients are added up, and the division by len(x) is missing.
    h = σ(w * x + b)
    return (2 * (h - y) * h * (1 - h)).sum()


def l2_db_no_sigmoid_derivative(x, y, w, b):
    # jiexunsee/Neural-Network-with-Python#1: the output delta is the error alone, without the sigmoid's derivative.
    h = σ(w * x + b)
    return (2 * (h - y)).mean()


def l2_db_derivative_of_net_input(x, y, w, b):
    # hankcs/neural_net#1: dsigmoid (written for an output, y·(1 − y)) proposed for the net input instead.
    z = w * x + b
    h = σ(z)
    return (2 * (h - y) * z * (1 - z)).mean()


def l3_backward_delta_without_derivative(cache):
    # hunkim/DeepLearningZeroToAll#113: d_l2 = diff, the sigmoid's derivative left out of a sigmoid + L2 loss.
    x, y, z, s = cache
    dJ_dz = 2 * (s - y) / len(x)
    return (x * dJ_dz).sum(), dJ_dz.sum()


def l4_gradients_without_two(X, y, w, b):
    # patrickloeber/MLfromscratch#18: dw = (1/n)·Xᵀ(ŷ − y) for the mean of squares, the factor 2 missing.
    return ex.l4_grads_by_graph(X, y, w, b, two=1.0)


def l4_bias_gradient_not_summed(X, y, w, b):
    # jimfleming/differentiation#1: the bias, broadcast over the batch, gets the batch's gradient unsummed.
    return ex.l4_grads_by_graph(X, y, w, b, summed=False)


# --------------------------------------------------------------------------- relu
def l5_relu_mask_from_upstream(dout, cache):
    # exacity/deeplearningbook-chinese#127: zero the parts of the *gradient* that are below 0.
    return dout * (dout > 0)


def l5_relu_slope_x(dout, cache):
    # denggaoshan/DeepLearningStudy#1: np.where(X > 0, X, 0) * grad.
    x = cache
    return torch.where(x > 0, x, torch.zeros_like(x)) * dout


def l5_relu_at_zero(dout, cache):
    # iamtrask/Grokking-Deep-Learning#13: relu2deriv uses >= 0, so the slope at 0 is 1.
    x = cache
    return dout * (x >= 0)


def l5_relu_zeroes_only_negatives(dout, cache):
    # pytorch/tutorials#269: grad_h[h < 0] = 0 on a copy of the upstream gradient lets it through where h is 0.
    x = cache
    return torch.where(x < 0, torch.zeros_like(dout), dout)


def l5_relu_with_sigmoid_derivative(dout, cache):
    # jeffheaton/encog-dotnet-core#124: the ReLU activation class has the sigmoid's derivative.
    x = cache
    return dout * σ(x) * (1 - σ(x))


def l7_relu_backward_mask_only(dout, cache):
    # haifengl/smile#528: the upstream gradient is overwritten by 0 or 1 (a `*` missing before `=`).
    return cache.to(dout.dtype)


def l7_relu_forward_mask_ge_on_output(x):
    # community.deeplearning.ai (115254): the derivative is taken as (A1 >= 0) on the ReLU's output: always 1.
    out = x.clamp(min=0)
    return out, out >= 0


def l7_relu_forward_mask_ge_on_input(x):
    # eriklindernoren/ML-From-Scratch activation_functions.py: ReLU gradient np.where(x >= 0, 1, 0).
    return x.clamp(min=0), x >= 0


# --------------------------------------------------------------------------- the two-layer network of lesson 5
def l5_two_layer_no_output_derivative(X, y, params):
    # Bot-Academy/NeuralNetworkFromScratch#3: the sigmoid's derivative is missing for the outer layer.
    return ex.l5_two_layer(X, y, params, dz2_of=lambda dp, p, z2: dp)


def l5_two_layer_derivative_on_input(X, y, params):
    # hanbt/learn_dl#3: activator.backward (out·(1 − out)) is given the layer's input.
    return ex.l5_two_layer(X, y, params, dz2_of=lambda dp, p, z2: dp * z2 * (1 - z2))


def l5_two_layer_derivative_twice(X, y, params):
    # hunkim/DeepLearningZeroToAll#20: sigma_prime multiplied in where the delta already has it.
    return ex.l5_two_layer(X, y, params, dz2_of=lambda dp, p, z2: dp * p * (1 - p) * p * (1 - p))


def l5_two_layer_hidden_without_weights(X, y, params):
    # stackoverflow.com/questions/46395467: the hidden delta reuses the output's error without W2ᵀ.
    return ex.l5_two_layer(X, y, params, da1_of=lambda dz2, W2, dW2, a1: dz2.expand_as(a1))


def l5_two_layer_dW_for_W(X, y, params):
    # community.deeplearning.ai (402919): dZ1 computed with dW2 where W2 belongs.
    return ex.l5_two_layer(X, y, params, da1_of=lambda dz2, W2, dW2, a1: dz2 @ dW2.T)


def l5_two_layer_extra_mean(X, y, params):
    # community.deeplearning.ai (63071): dZ1 is multiplied by 1/m, and dW1, db1 by 1/m again.
    return ex.l5_two_layer(X, y, params, dz1_of=lambda da1, z1: da1 * (z1 > 0) / len(X))


# --------------------------------------------------------------------------- linear layers
def l5_linear_db_mean(dout, cache):
    # kvfrans/notes#5: d_b1 = mean(d_h2) instead of the sum over the batch.
    x, W, b = cache
    return dout @ W.T, x.T @ dout, dout.mean(dim=0)


def l5_linear_db_sum_all(dout, cache):
    # rasbt/stat453-deep-learning-ss21#5: torch.sum over everything, one number for every bias.
    x, W, b = cache
    return dout @ W.T, x.T @ dout, dout.sum()


def l5_linear_db_with_input(dout, cache):
    # rust0258/...NLP-Specialization#62: grad_b = sum(dot(l1, x.T)): the bias gradient multiplied by the input.
    x, W, b = cache
    return dout @ W.T, x.T @ dout, (x.T @ dout).sum(dim=0)


def l7_linear_db_not_summed(dout, cache):
    # mlpack/mlpack#3679: the bias gradient is the error itself, right only for a batch of one.
    x, W = cache
    return dout @ W.T, x.T @ dout, dout


def l7_linear_dx_with_dW(dout, cache):
    # jcjohnson/pytorch-examples#28: grad_h = grad_y @ grad_w2.T, the weight's gradient where the weight belongs.
    x, W = cache
    dW = x.T @ dout
    return dout @ dW.T, dW, dout.sum(dim=0)


def l7_backward_divides_again(dlogits, caches):
    # janchorowski/nn_assignments#21: dLdTheta divided by num_samples although dL/dA already was.
    return ex.l7_backward(dlogits, caches, scale_w=1.0 / len(dlogits))


# --------------------------------------------------------------------------- softmax and cross-entropy
def l6_softmax_diagonal(logits, labels):
    # eriklindernoren/ML-From-Scratch#71: Softmax.gradient returns p·(1 − p), the Jacobian's diagonal.
    n, c, p, y = _ce_parts(logits, labels)
    dL_dp = -y / p / n
    return p * (1 - p) * dL_dp


def l6_softmax_prime_on_top(logits, labels):
    # zhuozhiyongde/Fundamentals-of-Artificial-Intelligence-2024Spring-PKU#1: softmax_prime(x) = s·(1 − s), the
    # Jacobian's diagonal, beside a loss derivative y_pred − y_true that already goes through the softmax; here
    # the two multiplied together.
    n, c, p, y = _ce_parts(logits, labels)
    return (p - y) * p * (1 - p) / n


def l6_softmax_wrong_axis(logits, labels):
    # deeplearning4j/deeplearning4j#345: the softmax is computed over dimension 0 instead of 1.
    n, c, _, y = _ce_parts(logits, labels)
    return (torch.softmax(logits, dim=0) - y) / n


def l6_labels_minus_probs(logits, labels):
    # haifengl/smile#151: (target − output) where (output − target) belongs.
    n, c, p, y = _ce_parts(logits, labels)
    return (y - p) / n


def l6_factor_two(logits, labels):
    # markroxor/fromscratchtoml#65: the softmax gradient is off by a factor of two.
    n, c, p, y = _ce_parts(logits, labels)
    return 2 * (p - y) / n


def l6_assign_instead_of_subtract(logits, labels):
    # bruceoutdoors/CS231n#5: X_mask[range, y] = −count where −= belongs (here: the label entry of each row).
    n, c, p, y = _ce_parts(logits, labels)
    d = p.clone()
    d[torch.arange(n), labels] = -1
    return d / n


def l7_softmax_diagonal(logits, labels):
    # forums.fast.ai "Gradients for softmax are tiny" (18970/10): softmax − softmax² used as the softmax's derivative.
    n, c, p, y = _ce_parts(logits, labels)
    loss = -(y * torch.log_softmax(logits, dim=1)).sum() / n
    return loss, (p - p**2) * (-y / p) / n


def l7_labels_minus_probs(logits, labels):
    # deeplearning4j/deeplearning4j#345 (second comment): labels.sub(pYGivenX) instead of pYGivenX.sub(labels).
    n, c, p, y = _ce_parts(logits, labels)
    loss = -(y * torch.log_softmax(logits, dim=1)).sum() / n
    return loss, (y - p) / n


# --------------------------------------------------------------------------- lesson 7: the log-softmax node, the whole pass
def l7_log_softmax_plus_p(dlogp, logp):
    # mlpack/mlpack#2360: LogSoftMax::Backward gave gy + exp(output) (the report's numbers: 1 + p), the softmax's
    # term added as it is instead of p times the row sum of gy, subtracted.
    return dlogp + logp.exp()


def l7_log_softmax_dot_with_output(dlogp, logp):
    # uxlfoundation/oneDNN#616: the reference logsoftmax backward computed diff_dst − (diff_dst · dst), the row's dot
    # product with the log-probabilities, where exp(dst) times the row sum of diff_dst belongs.
    return dlogp - (dlogp * logp).sum(dim=1, keepdim=True)


def l7_global_max_logsumexp(logits, labels):
    # twitter-archive/torch-autograd#166: logSumExp shifted by the maximum of the whole batch (torch.max(array))
    # instead of each row's own maximum; rows far apart underflow to log(0).
    n, c = logits.shape
    shifted = logits - logits.max()
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    y = F.one_hot(labels, c).to(logits.dtype)
    return -(y * log_probs).sum() / n, (log_probs.exp() - y) / n


def l7_step_every_layer_updated_first(params, X, y, lr):
    # VikParuchuri/zero_to_gpt#12: in the backward loop each layer's weights are updated before the gradient is
    # pulled through them (grad = grad @ W.T after W -= lr * w_grad).
    return ex.l7_backward_and_step(params, X, y, lr, stale=("3", "2"))


def l7_step_previous_error_with_new_weights(params, X, y, lr):
    # kim-marcel/basic_neural_network#7: the error for the layer below is computed with weights[n − 1] already
    # changed by this step's correction.
    return ex.l7_backward_and_step(params, X, y, lr, stale=("3", "2"))


def l7_step_hidden_deltas_after_output_update(params, X, y, lr):
    # joelgrus/data-science-from-scratch#31: the output layer's weights are updated right after the output deltas,
    # and the hidden deltas are computed with the updated ones (the output layer only).
    return ex.l7_backward_and_step(params, X, y, lr, stale=("3",))


def l7_forward_keeping_z(params, X):
    # the forward pass with each ReLU's cache its input z (what the sigmoid-derivative mistake below reads)
    z1, c1 = ex.l7_linear_forward(X, params["W1"], params["b1"])
    z2, c2 = ex.l7_linear_forward(z1.clamp(min=0), params["W2"], params["b2"])
    logits, c3 = ex.l7_linear_forward(z2.clamp(min=0), params["W3"], params["b3"])
    return logits, (c1, z1, c2, z2, c3)


def l7_backward_sigmoid_derivative_in_every_relu(dlogits, caches):
    # jeffheaton/encog-dotnet-core#124: the ReLU activation's derivative is the sigmoid's, so every ReLU layer of
    # the network multiplies by σ'(z) instead of the mask.
    c1, z1, c2, z2, c3 = caches
    grads = {}
    da2, grads["W3"], grads["b3"] = ex.l7_linear_backward(dlogits, c3)
    dz2 = da2 * σ(z2) * (1 - σ(z2))
    da1, grads["W2"], grads["b2"] = ex.l7_linear_backward(dz2, c2)
    dz1 = da1 * σ(z1) * (1 - σ(z1))
    _, grads["W1"], grads["b1"] = ex.l7_linear_backward(dz1, c1)
    return grads


# --------------------------------------------------------------------------- weight penalty (extension)
def l2_coefficient_without_two(dout, cache, lam):
    # jingtinghuang/CS231n-Spring-2017#3: dW += reg·W for the penalty reg·ΣW² (the 2 is missing).
    x, W, b = cache
    return x.T @ dout + lam * W


def l2_coefficient_of_other_convention(dout, cache, lam):
    # cs231n/cs231n.github.io#89: the notes' 2·reg·W used with the code's penalty 0.5·reg·ΣW²; here, with
    # λ = 0.5·reg, that is 4·λ·W.
    x, W, b = cache
    reg = 2 * lam
    return x.T @ dout + 2 * reg * W


def l2_adds_penalty_value(dout, cache, lam):
    # JPLAY0/CS231nAssignment#10: dW += reg·np.sum(W·W) instead of the penalty's gradient.
    x, W, b = cache
    return x.T @ dout + 2 * lam * (W * W).sum()


def l2_adds_squared_sum(dout, cache, lam):
    # omar-florez/scratch_mlp#5: dL_dw2 = ... + reg_coeff·np.square(w2).sum(), a constant added to every entry.
    x, W, b = cache
    return x.T @ dout + lam * W.square().sum()


CORPUS = [
    Mistake("interviews-ai-4", "https://github.com/BoltzmannEntropy/interviews.ai/issues/4", "wrong_point",
            "L1.dsse_dw", {"dsse_dw": l1_deriv_on_preactivation}, "σ' as z(1 − z) on the pre-activation"),
    Mistake("sudo-productivity-3", "https://github.com/kyle8998/Sudo-Productivity/issues/3", "wrong_point",
            "L2.dJ_dw", {"dJ_dw": l2_deriv_on_preactivation}, "σ' as z(1 − z) on the pre-activation"),
    Mistake("libbrain-78", "https://github.com/benoitfragit/libBrain/issues/78", "wrong_point",
            "L2.dJ_dw", {"dJ_dw": l2_deriv_fed_activation}, "σ' evaluated at σ(z)"),
    Mistake("interviews-ai-15", "https://github.com/BoltzmannEntropy/interviews.ai/issues/15", "wrong_point",
            "L3.dsigma_dz", {"dsigma_dz": l3_dsigma_on_input}, "σ' as z(1 − z)"),
    Mistake("torch7-232", "https://github.com/torch/torch7/issues/232", "sigmoid_part",
            "L3.dsigma_dz", {"dsigma_dz": l3_dsigma_one_minus}, "1 − σ for σ(1 − σ)"),
    Mistake("gophernet-6", "https://github.com/dwhitena/gophernet/issues/6", "wrong_point",
            "L3.backward", {"backward": l3_backward_sigmoid_prime_of_output}, "σ' of the output"),
    Mistake("devhide-45988293",
            "https://devhide.com/neural-networks-trying-to-understand-cost-function-with-respect-to-gradient-45988293",
            "sigmoid_part", "L3.backward", {"backward": l3_backward_one_minus_of_output}, "1 − σ, of the output"),
    Mistake("deeplearntoolbox-165", "https://github.com/rasmusbergpalm/DeepLearnToolbox/issues/165", "wrong_point",
            "L5.sigmoid_backward", {"sigmoid_backward": l5_sigmoid_backward_of_output}, "σ' of the cached output"),
    Mistake("numpy-nn-3", "https://github.com/yizt/numpy_neural_network/issues/3", "wrong_point",
            "L5.sigmoid_backward", {"sigmoid_backward": l5_sigmoid_backward_of_upstream}, "derivative of dout"),
    Mistake("dlbook-zh-127", "https://github.com/exacity/deeplearningbook-chinese/issues/127", "mask_upstream",
            "L5.relu_backward", {"relu_backward": l5_relu_mask_from_upstream}, "mask from the gradient's sign"),
    Mistake("dlstudy-1", "https://github.com/denggaoshan/DeepLearningStudy/issues/1", "relu_slope",
            "L5.relu_backward", {"relu_backward": l5_relu_slope_x}, "slope x"),
    Mistake("grokking-13", "https://github.com/iamtrask/Grokking-Deep-Learning/pull/13", "mask_at_zero",
            "L5.relu_backward", {"relu_backward": l5_relu_at_zero}, "x >= 0"),
    Mistake("pytorch-tutorials-269", "https://github.com/pytorch/tutorials/pull/269", "mask_at_zero",
            "L5.relu_backward", {"relu_backward": l5_relu_zeroes_only_negatives}, "zeroes x < 0 only: x = 0 passes"),
    Mistake("encog-124", "https://github.com/jeffheaton/encog-dotnet-core/issues/124", "other_activation",
            "L5.relu_backward", {"relu_backward": l5_relu_with_sigmoid_derivative}, "sigmoid derivative in ReLU"),
    Mistake("smile-528", "https://github.com/haifengl/smile/issues/528", "no_upstream",
            "L7.relu_backward", {"relu_backward": l7_relu_backward_mask_only}, "mask only, upstream dropped"),
    Mistake("dlai-115254", "https://community.deeplearning.ai/t/regarding-derivative-of-relu-activation-function/115254",
            "mask_missing", "L7.relu_backward", {"relu_forward": l7_relu_forward_mask_ge_on_output},
            "(A >= 0) on the output is always true"),
    Mistake("mlfromscratch-relu",
            "https://github.com/eriklindernoren/ML-From-Scratch/blob/master/mlfromscratch/deep_learning/activation_functions.py",
            "mask_at_zero", "L7.relu_backward", {"relu_forward": l7_relu_forward_mask_ge_on_input}, "x >= 0"),
    Mistake("bot-academy-3", "https://github.com/Bot-Academy/NeuralNetworkFromScratch/pull/3", "dropped",
            "L5.two_layer", {"two_layer_loss_and_grads": l5_two_layer_no_output_derivative}, "no σ' at the output"),
    Mistake("learn-dl-3", "https://github.com/hanbt/learn_dl/issues/3", "wrong_point",
            "L5.two_layer", {"two_layer_loss_and_grads": l5_two_layer_derivative_on_input}, "z2(1 − z2)"),
    Mistake("zerotoall-20", "https://github.com/hunkim/DeepLearningZeroToAll/issues/20", "twice",
            "L5.two_layer", {"two_layer_loss_and_grads": l5_two_layer_derivative_twice}, "σ' twice"),
    Mistake("so-46395467", "https://stackoverflow.com/questions/46395467", "dropped",
            "L5.two_layer", {"two_layer_loss_and_grads": l5_two_layer_hidden_without_weights}, "no W2ᵀ"),
    Mistake("dlai-402919", "https://community.deeplearning.ai/t/w3-ex-6-assertionerror-wrong-values-for-dw1/402919",
            "wrong_factor", "L5.two_layer", {"two_layer_loss_and_grads": l5_two_layer_dW_for_W}, "dW2 for W2"),
    Mistake("dlai-63071",
            "https://community.deeplearning.ai/t/course-1-week-3-planar-assignment-4-5-exercise-6-backward-propagation-error-for-dw1-values/63071",
            "factor", "L5.two_layer", {"two_layer_loss_and_grads": l5_two_layer_extra_mean}, "1/m twice"),
    Mistake("kvfrans-notes-5", "https://github.com/kvfrans/notes/issues/5", "factor",
            "L5.linear_backward", {"linear_backward": l5_linear_db_mean}, "mean for sum"),
    Mistake("stat453-5", "https://github.com/rasbt/stat453-deep-learning-ss21/issues/5", "shape",
            "L5.linear_backward", {"linear_backward": l5_linear_db_sum_all}, "sum over everything"),
    Mistake("nlp-spec-62",
            "https://github.com/rust0258/Deeplearning.ai-Natural-Language-Processing-Specialization/issues/62",
            "wrong_factor", "L5.linear_backward", {"linear_backward": l5_linear_db_with_input}, "x in db"),
    Mistake("mlpack-3679", "https://github.com/mlpack/mlpack/pull/3679", "shape",
            "L7.linear_backward", {"linear_backward": l7_linear_db_not_summed}, "db not summed over the batch"),
    Mistake("pytorch-examples-28", "https://github.com/jcjohnson/pytorch-examples/issues/28", "wrong_factor",
            "L7.linear_backward", {"linear_backward": l7_linear_dx_with_dW}, "dW for W in dx"),
    Mistake("nn-assignments-21", "https://github.com/janchorowski/nn_assignments/pull/21", "factor",
            "L7.backward", {"backward": l7_backward_divides_again}, "divided by N twice"),
    Mistake("mlfromscratch-71", "https://github.com/eriklindernoren/ML-From-Scratch/issues/71", "softmax_diag",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_softmax_diagonal}, "diagonal only"),
    Mistake("pku-ai-2024-1",
            "https://github.com/zhuozhiyongde/Fundamentals-of-Artificial-Intelligence-2024Spring-PKU/issues/1",
            "softmax_diag", "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_softmax_prime_on_top},
            "p − y times the diagonal s(1 − s)"),
    Mistake("dl4j-345-axis", "https://github.com/deeplearning4j/deeplearning4j/issues/345", "softmax_axis",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_softmax_wrong_axis}, "dim 0"),
    Mistake("smile-151", "https://github.com/haifengl/smile/pull/151", "sign",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_labels_minus_probs}, "y − p"),
    Mistake("fromscratchtoml-65", "https://github.com/markroxor/fromscratchtoml/issues/65", "factor",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_factor_two}, "factor 2"),
    Mistake("cs231n-bruceoutdoors-5", "https://github.com/bruceoutdoors/CS231n/issues/5", "last_term",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_assign_instead_of_subtract}, "= for -="),
    Mistake("fastai-18970", "https://forums.fast.ai/t/gradients-for-softmax-are-tiny-solved/18970/10", "softmax_diag",
            "L7.softmax_cross_entropy", {"softmax_cross_entropy": l7_softmax_diagonal}, "softmax − softmax²"),
    Mistake("dlwithtf-14", "https://github.com/matroid/dlwithtf/issues/14", "broadcasting trap",
            "L1.dsse_dw", {"dsse_dw": l1_broadcast_labels}, "(N, 1) − (N,) is (N, N)"),
    Mistake("pytorch-tutorial-11", "https://github.com/patrickloeber/pytorchTutorial/pull/11", "factor",
            "L2.dJ_dw", {"dJ_dw": l2_dot_then_mean}, "mean of a dot product: a sum"),
    Mistake("udacity-409", "https://github.com/udacity/deep-learning-v2-pytorch/issues/409", "twice",
            "L2.dJ_dw", {"dJ_dw": l2_error_times_input_twice}, "x in the error term and in the step"),
    Mistake("mlbasic-2", "https://github.com/tsycnh/mlbasic/issues/2", "factor",
            "L2.dJ_db", {"dJ_db": l2_db_not_averaged}, "no 1/N"),
    Mistake("nn-python-1", "https://github.com/jiexunsee/Neural-Network-with-Python/issues/1", "dropped",
            "L2.dJ_db", {"dJ_db": l2_db_no_sigmoid_derivative}, "no σ'"),
    Mistake("hankcs-nn-1", "https://github.com/hankcs/neural_net/issues/1", "wrong_point",
            "L2.dJ_db", {"dJ_db": l2_db_derivative_of_net_input}, "z(1 − z)"),
    Mistake("zerotoall-113", "https://github.com/hunkim/DeepLearningZeroToAll/pull/113", "dropped",
            "L3.backward", {"backward": l3_backward_delta_without_derivative}, "no σ'"),
    Mistake("mlfromscratch-18", "https://github.com/patrickloeber/MLfromscratch/issues/18", "factor",
            "L4.grads_by_graph", {"grads_by_graph": l4_gradients_without_two}, "no factor 2"),
    Mistake("differentiation-1", "https://github.com/jimfleming/differentiation/issues/1", "shape",
            "L4.grads_by_graph", {"grads_by_graph": l4_bias_gradient_not_summed}, "db not summed"),
    Mistake("dl4j-345-sign", "https://github.com/deeplearning4j/deeplearning4j/issues/345", "sign",
            "L7.softmax_cross_entropy", {"softmax_cross_entropy": l7_labels_minus_probs}, "labels − p"),
    Mistake("mlpack-2360", "https://github.com/mlpack/mlpack/issues/2360", "no_upstream",
            "L7.log_softmax_backward", {"log_softmax_backward": l7_log_softmax_plus_p}, "gy + exp(output)"),
    Mistake("onednn-616", "https://github.com/uxlfoundation/oneDNN/issues/616", "wrong_factor",
            "L7.log_softmax_backward", {"log_softmax_backward": l7_log_softmax_dot_with_output}, "dy − Σ dy·logp"),
    Mistake("torch-autograd-166", "https://github.com/twitter-archive/torch-autograd/issues/166", "nan",
            "L7.softmax_cross_entropy", {"softmax_cross_entropy": l7_global_max_logsumexp}, "one max for the batch"),
    Mistake("zero-to-gpt-12", "https://github.com/VikParuchuri/zero_to_gpt/issues/12", "stale weights",
            "L7.backward_and_step", {"backward_and_step": l7_step_every_layer_updated_first}, "W updated, then used"),
    Mistake("basic-nn-7", "https://github.com/kim-marcel/basic_neural_network/issues/7", "stale weights",
            "L7.backward_and_step", {"backward_and_step": l7_step_previous_error_with_new_weights}, "W updated, then used"),
    Mistake("dsfs-31", "https://github.com/joelgrus/data-science-from-scratch/issues/31", "stale weights",
            "L7.backward_and_step", {"backward_and_step": l7_step_hidden_deltas_after_output_update},
            "output layer updated first"),
    Mistake("encog-124-network", "https://github.com/jeffheaton/encog-dotnet-core/issues/124", "other_activation",
            "L7.backward", {"forward": l7_forward_keeping_z, "backward": l7_backward_sigmoid_derivative_in_every_relu},
            "σ' in every ReLU layer"),
    Mistake("cs231n-jingtinghuang-3", "https://github.com/jingtinghuang/CS231n-Spring-2017/issues/3", "reg_coeff",
            "EXT.l2_linear", {"linear_backward_l2": l2_coefficient_without_two}, "reg·W for reg·ΣW²"),
    Mistake("cs231n-notes-89", "https://github.com/cs231n/cs231n.github.io/issues/89", "reg_coeff",
            "EXT.l2_linear", {"linear_backward_l2": l2_coefficient_of_other_convention}, "2·reg·W for 0.5·reg·ΣW²"),
    Mistake("cs231n-jplay0-10", "https://github.com/JPLAY0/CS231nAssignment/issues/10", "penalty_value",
            "EXT.l2_linear", {"linear_backward_l2": l2_adds_penalty_value}, "penalty value added"),
    Mistake("scratch-mlp-5", "https://github.com/omar-florez/scratch_mlp/issues/5", "penalty_value",
            "EXT.l2_linear", {"linear_backward_l2": l2_adds_squared_sum}, "penalty value added"),
]


# --------------------------------------------------------------------------- held out
# Collected after the mechanism was written and measured on CORPUS (commit dc2a3ff), and not used to change it:
# a check of how it does on mistakes it was not shaped around. Reported separately.
def l7_backward_factors(dlogits, caches):
    # bighuang624/Andrew-Ng-Deep-Learning-notes#10: dW2 = 1/m·dZ2·A1ᵀ·2 and db1 = 4/m·Σ dZ1 (two stray constants).
    grads = ex.l7_backward(dlogits, caches)
    grads["W2"] = grads["W2"] * 2
    grads["b1"] = grads["b1"] * 4
    return grads


def l3_dsigma_difference(z):
    # sausheong/gonn#8: σ'(x) written as σ(x) − (1 − σ(x)), a difference where the product belongs.
    return σ(z) - (1 - σ(z))


def l3_backward_derivative_of_input(cache):
    # apache/incubator-retired-horn#8: applyDerivative(x) = x·(1 − x) with x the weighted sum.
    x, y, z, s = cache
    dJ_dz = z * (1 - z) * 2 * (s - y) / len(x)
    return (x * dJ_dz).sum(), dJ_dz.sum()


def l6_divided_by_numel(logits, labels):
    # victorlempitsky/Mate#2: the softmax loss's derivative divided by numel (N·C), not by the batch size N.
    n, c, p, y = _ce_parts(logits, labels)
    return (p - y) / (n * c)


def l6_global_max_shift(logits, labels):
    # manassharma07/crysx_nn#7: the softmax's max taken over the whole array, not per row: the same numbers until a
    # row far below the global max underflows to 0/0.
    n, c = logits.shape
    e = (logits - logits.max()).exp()
    return (e / e.sum(dim=1, keepdim=True) - F.one_hot(labels, c).to(logits.dtype)) / n


def l2_not_reduced(x, y, w, b):
    # community.deeplearning.ai (119220): dw with an elementwise product where a sum over the examples belongs.
    h = σ(w * x + b)
    return 2 * (h - y) * h * (1 - h) * x / len(x)


HELD_OUT = [
    Mistake("dl-notes-10", "https://github.com/bighuang624/Andrew-Ng-Deep-Learning-notes/issues/10", "factor",
            "L7.backward", {"backward": l7_backward_factors}, "dW2·2, db1·4"),
    Mistake("gonn-8", "https://github.com/sausheong/gonn/issues/8", "sigmoid_part",
            "L3.dsigma_dz", {"dsigma_dz": l3_dsigma_difference}, "σ − (1 − σ)"),
    Mistake("horn-8", "https://github.com/apache/incubator-retired-horn/pull/8", "wrong_point",
            "L3.backward", {"backward": l3_backward_derivative_of_input}, "z(1 − z)"),
    Mistake("mate-2", "https://github.com/victorlempitsky/Mate/issues/2", "factor",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_divided_by_numel}, "/ (N·C)"),
    Mistake("crysx-7", "https://github.com/manassharma07/crysx_nn/issues/7", "nan",
            "L6.softmax_cross_entropy_grad", {"softmax_cross_entropy_grad": l6_global_max_shift}, "global max"),
    Mistake("dlai-119220", "https://community.deeplearning.ai/t/course-1-week-2-exercise-5-propagate/119220", "shape",
            "L2.dJ_dw", {"dJ_dw": l2_not_reduced}, "no sum over the examples"),
]
