"""nasforge.predictors"""
