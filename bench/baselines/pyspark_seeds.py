"""Baseline: the seeds' approach, a PySpark DataFrame script that reads the raw JSON lines, cleans them
and answers the nine questions, written the way the seeds' Databricks notebooks do it.

Differences from the seeds, made so that the results equal pinpipe's marts (checked by
bench/bench_engines.py): duplicate posts are dropped, the follower count's k/M are multiplied rather
than string-replaced, medians are exact (percentile) rather than approximate, and ties are kept.

    .venv/bin/python bench/baselines/pyspark_seeds.py RAW_DIR [--out marts.json]

RAW_DIR holds pin/, geo/ and user/ folders of JSON-lines files, as the S3 sink writes them.
"""

from __future__ import annotations

import argparse
import json
import time

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812 - PySpark's own convention, as in the seeds


def clean_pin(df_pin: DataFrame) -> DataFrame:
    placeholders = {
        "title": ["No Title Data Available", ""],
        "description": ["No description available Story format", "No description available", ""],
        "poster_name": ["User Info Error"],
        "follower_count": ["User Info Error"],
        "tag_list": ["N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e"],
        "image_src": ["Image src error."],
    }
    for column, values in placeholders.items():
        df_pin = df_pin.withColumn(column, F.when(F.col(column).isin(values), None).otherwise(F.col(column)))
    count = F.col("follower_count")
    df_pin = df_pin.withColumn(
        "follower_count",
        F.when(count.rlike("^[0-9]+$"), count.cast("bigint"))
        .when(
            count.rlike("^[0-9]+k$"),
            F.expr("cast(substr(follower_count, 1, length(follower_count) - 1) as bigint)") * 1000,
        )
        .when(
            count.rlike("^[0-9]+M$"),
            F.expr("cast(substr(follower_count, 1, length(follower_count) - 1) as bigint)") * 1000000,
        ),
    )
    df_pin = df_pin.withColumn("poster_name", F.rtrim("poster_name"))
    df_pin = df_pin.withColumn("save_location", F.regexp_replace("save_location", "Local save in ", ""))
    df_pin = df_pin.withColumnRenamed("index", "ind").dropDuplicates(["ind"])
    return df_pin.select(
        "ind",
        "unique_id",
        "title",
        "description",
        "follower_count",
        "poster_name",
        "tag_list",
        "is_image_or_video",
        "image_src",
        "save_location",
        "category",
    )


def either_timestamp_form(column: str) -> F.Column:
    return F.coalesce(
        F.try_to_timestamp(column, F.lit("yyyy-MM-dd HH:mm:ss")),
        F.try_to_timestamp(column, F.lit("yyyy-MM-dd'T'HH:mm:ss")),
    )


def clean_geo(df_geo: DataFrame) -> DataFrame:
    df_geo = df_geo.withColumn("coordinates", F.array("latitude", "longitude"))
    df_geo = df_geo.withColumn("timestamp", either_timestamp_form("timestamp"))
    return df_geo.dropDuplicates(["ind"]).select("ind", "country", "coordinates", "timestamp")


def clean_user(df_user: DataFrame) -> DataFrame:
    df_user = df_user.withColumn("user_name", F.concat("first_name", F.lit(" "), "last_name"))
    df_user = df_user.withColumn("date_joined", either_timestamp_form("date_joined"))
    return df_user.dropDuplicates(["ind"]).select("ind", "user_name", "age", "date_joined")


def age_group(age: F.Column) -> F.Column:
    return (
        F.when(age.between(18, 24), "18-24")
        .when(age.between(25, 35), "25-35")
        .when(age.between(36, 50), "36-50")
        .when(age >= 51, "50+")
    )


def top(df: DataFrame, group: str | None, measure: str) -> DataFrame:
    window = (Window.partitionBy(group) if group else Window.partitionBy()).orderBy(F.col(measure).desc())
    return df.withColumn("rank", F.rank().over(window)).filter("rank = 1").drop("rank")


def marts(spark: SparkSession, raw: str) -> dict[str, DataFrame]:
    df_pin = clean_pin(spark.read.json(f"{raw}/pin"))
    df_geo = clean_geo(spark.read.json(f"{raw}/geo"))
    df_user = clean_user(spark.read.json(f"{raw}/user"))
    posts = (
        df_pin.join(df_geo, "ind")
        .join(df_user, "ind")
        .withColumn("post_year", F.year("timestamp").cast("int"))
        .withColumn("join_year", F.year("date_joined").cast("int"))
        .withColumn("age_group", age_group(F.col("age")))
    ).cache()
    people = (
        posts.groupBy("user_name", "age", "age_group", "date_joined", "join_year").agg(
            F.max("follower_count").alias("follower_count")
        )
    ).cache()
    known = people.filter(F.col("follower_count").isNotNull())
    window = F.col("join_year").between(2015, 2020)
    by_country = top(
        posts.groupBy("country", "category").agg(F.count("*").alias("category_count")), "country", "category_count"
    )
    most_followed = top(
        posts.filter("poster_name is not null and follower_count is not null")
        .groupBy("country", "poster_name")
        .agg(F.max("follower_count").alias("follower_count")),
        "country",
        "follower_count",
    )
    median = F.percentile("follower_count", 0.5).cast("double").alias("median_follower_count")
    return {
        "most_popular_category_by_country": by_country,
        "posts_per_category_by_year": posts.filter(F.col("post_year").between(2018, 2022))
        .groupBy("post_year", "category")
        .agg(F.count("*").alias("category_count")),
        "most_followed_user_by_country": most_followed,
        "country_with_most_followed_user": top(most_followed, None, "follower_count"),
        "most_popular_category_by_age_group": top(
            posts.filter("age_group is not null")
            .groupBy("age_group", "category")
            .agg(F.count("*").alias("category_count")),
            "age_group",
            "category_count",
        ),
        "median_follower_count_by_age_group": known.filter("age_group is not null").groupBy("age_group").agg(median),
        "users_joined_by_year": people.filter(window)
        .groupBy("join_year")
        .agg(F.count("*").alias("number_users_joined")),
        "median_follower_count_by_join_year": known.filter(window).groupBy("join_year").agg(median),
        "median_follower_count_by_age_group_and_join_year": known.filter(window & F.col("age_group").isNotNull())
        .groupBy("age_group", "join_year")
        .agg(median),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw")
    parser.add_argument("--out", help="write the marts' rows as JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("seeds-baseline")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    results = {name: [row.asDict() for row in df.collect()] for name, df in marts(spark, args.raw).items()}
    elapsed = time.perf_counter() - started
    if args.out:
        with open(args.out, "w") as out:
            json.dump(results, out, default=str)
    print(json.dumps({"seconds": elapsed, "rows": {k: len(v) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
