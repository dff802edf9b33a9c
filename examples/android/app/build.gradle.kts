plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.kerasl0.keyboard"
    compileSdk = 34

    defaultConfig {
        applicationId = "org.kerasl0.keyboard"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
    // The .tflite is memory-mapped from the APK: it must stay uncompressed.
    androidResources {
        noCompress += "tflite"
    }
}

dependencies {
    // Google's official LiteRT runtime (the TFLite Interpreter API with
    // signature runners), from Google's Maven repository.
    implementation("com.google.ai.edge.litert:litert:1.4.0")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.lifecycle:lifecycle-runtime-ktx:2.8.4")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.8.1")
}
