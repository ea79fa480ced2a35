"""MMVP on Moving MNIST, 10 -> 10 frames of 64x64 (OpenSTL configs/mmnist/MMVP.py).

hid_S 32, hid_T 192, 2 RRDBs each in encoder, decoder and enhancer, down-sampling 2,2,2 (motion
matrices on 8x8 and 4x4 grids), direct matrix predictor: 14,828,581 parameters.
Training as OpenSTL's MMVP method: the model is fed all T+T' frames (model.train_feed 'openstl';
see tau_jax/models/mmvp) and the loss is the MSE of its T' outputs (config.loss is not used).
batch 16, 200 epochs (OpenSTL's default), Adam + OneCycle; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("mmvp")
    config.model.update(in_shape=(10, 64, 64, 1), out_frames=10, hid_S=32, hid_T=192,
                        rrdb_encoder_num=2, rrdb_decoder_num=2, rrdb_enhance_num=2,
                        downsample_setting="2,2,2", use_direct_predictor=True)
    config.data.update(name="moving_mnist", batch_size=16, in_frames=10, out_frames=10)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 200
    return config
