"""CardSense serving: Paddle Inference predictor, Flask app (run by gunicorn), batch scorer.

    gunicorn -c serving/gunicorn.conf.py "serving.app:create_app()"
    python -m serving.batch test.zip --out predictions.csv

See docs/SERVING.md.
"""
